"""The compiler: IR, op registry, passes, lowering and code generation."""
