"""Is a cached object file safe to hand to LLVM? LLVM aborts the whole process
(`LLVM ERROR: ...`) on a malformed object, so a garbled cache entry would kill
every later run. The object is linked once in a child process first: if the
child dies, the entry is discarded and the model rebuilt (BAD_INPUTS row 29)."""
import hashlib
import subprocess
import sys

_CHILD = r"""
import sys
import llvmlite.binding as llvm
llvm.initialize_native_target()
llvm.initialize_native_asmprinter()
triple, cpu, features = sys.argv[1:4]
for name in ("nutshell_parallel", "nutshell_pool_hold", "nutshell_pool_release"):
    llvm.add_symbol(name, 1)     # the thread pool's entry points: linked, never run here
tm = llvm.Target.from_triple(triple).create_target_machine(cpu=cpu, features=features, opt=0)
mod = llvm.parse_assembly("")
mod.triple = tm.triple
engine = llvm.create_mcjit_compiler(mod, tm)
data, at = sys.stdin.buffer.read(), 0
while at < len(data):                       # length-prefixed objects: a split build's parts
    size = int.from_bytes(data[at:at + 8], "little")
    engine.add_object_file(llvm.ObjectFileRef.from_data(data[at + 8:at + 8 + size]))
    at += 8 + size
engine.finalize_object()
"""
CHECK_SECONDS = 60
_checked = set()          # digests of objects already linked in a child (this process)


def _digest(objects, target):
    data = b"".join(len(o).to_bytes(8, "little") + bytes(o) for o in objects)
    return data, hashlib.sha256(data).digest() + target.description().encode()


def linked_here(obj, target):
    """`obj` (or a list) was just compiled and linked in this process: no child needed
    to check it again when this process reads it back from the cache."""
    _checked.add(_digest(obj if isinstance(obj, list) else [obj], target)[1])


def object_links(obj, target):
    """True when LLVM links `obj` (or a list of objects, together) for `target` in a
    child process without failing."""
    objects = obj if isinstance(obj, list) else [obj]
    if not objects or any(not isinstance(o, (bytes, bytearray)) or o[:4] != b"\x7fELF" for o in objects):
        return False
    data, digest = _digest(objects, target)
    if digest in _checked:
        return True
    try:
        result = subprocess.run([sys.executable, "-c", _CHILD, target.triple, target.cpu, target.features],
                                input=data, capture_output=True, timeout=CHECK_SECONDS)
    except (OSError, subprocess.SubprocessError):
        return False
    if result.returncode != 0:
        return False
    _checked.add(digest)
    return True
