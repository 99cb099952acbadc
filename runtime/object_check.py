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


class LinkCheck:
    """A child that links objects for `target`, started now so that its start-up
    (a Python and LLVM's libraries: most of a cached compile's wait) overlaps the
    caller's work until the object is known; `links(obj)` then hands it over."""

    def __init__(self, target):
        self.target = target
        try:
            self.child = subprocess.Popen([sys.executable, "-c", _CHILD, target.triple, target.cpu,
                                           target.features], stdin=subprocess.PIPE,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            self.child = None

    def links(self, obj):
        """True when LLVM links `obj` (or a list of objects, together) in the child."""
        child, self.child = self.child, None
        known, data, digest = _known(obj, self.target)
        if known is not None:
            _stop(child)
            return known
        if child is None:
            return False
        try:
            child.communicate(data, timeout=CHECK_SECONDS)
        except (OSError, subprocess.SubprocessError):
            child.kill()
            child.wait()
            return False
        if child.returncode != 0:
            return False
        _checked.add(digest)
        return True

    def close(self):
        """Not needed after all (a miss)."""
        _stop(self.child)
        self.child = None


def _stop(child):
    if child is not None:
        child.kill()
        child.wait()


def _known(obj, target):
    """(True/False when no child is needed to tell, else None; the child's input; digest)."""
    objects = obj if isinstance(obj, list) else [obj]
    if not objects or any(not isinstance(o, (bytes, bytearray)) or o[:4] != b"\x7fELF" for o in objects):
        return False, None, None
    data, digest = _digest(objects, target)
    return (True if digest in _checked else None), data, digest


def object_links(obj, target, check=None):
    """True when LLVM links `obj` (or a list of objects, together) for `target` in a
    child process without failing (`check`: a LinkCheck started earlier)."""
    known = _known(obj, target)[0] if check is None else None
    if known is not None:
        return known
    return (check or LinkCheck(target)).links(obj)
