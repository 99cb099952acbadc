"""The thin runtime: JIT engine, compiled-model objects, arena, AOT loader."""
