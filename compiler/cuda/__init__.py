"""The CUDA target: loop-IR kernels mapped onto a grid of GPU threads, emitted as
PTX through llvmlite's NVPTX backend, or run on the CPU ("cuda-emulated")."""
