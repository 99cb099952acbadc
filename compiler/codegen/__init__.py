"""Loop IR -> LLVM IR (llvmlite): kernels, the model entry point, PTX later."""
