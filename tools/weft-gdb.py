# weft-gdb.py: gdb commands for programs that use weft's fibers.
#
#   info weft-fibers   the workers, then every fiber in the registry: id,
#                      name, state, what a parked fiber waits for, the
#                      worker it last ran on, and where a suspended one
#                      waits: its innermost frame in the program's code
#   weft-bt ID         the backtrace of a suspended fiber (ID: a fiber id,
#                      or any expression giving one or a weft_fiber *)
#
# Load with `source /usr/share/weft/weft-gdb.py` (wherever meson installed
# it: DATADIR/weft/) or `gdb -x .../weft-gdb.py`. Works on a live process
# and on a core file alike: everything is read from the inferior's memory,
# no register is written and no function is called in it. Needs gdb >= 11
# with Python, and debug information for libweft's internal structs
# (a release build, -O3 without -g, has none) on x86-64.
#
# How weft-bt works. A suspended fiber is its saved stack pointer
# (weft_fiber.ctx.sp); src/ctx/arch/x86_64_sysv.S pushed the callee-saved
# registers and the return address there:
#
#     sp + 0x38  return address      sp + 0x18  r14
#     sp + 0x30  rbp                 sp + 0x10  r13
#     sp + 0x28  rbx                 sp + 0x08  r12
#     sp + 0x20  r15                 sp + 0x00  MXCSR, x87 CW
#
# gdb cannot be handed a frame that is on no thread without writing a
# thread's registers, which a core file does not allow. So a Python
# unwinder, armed only while a fiber is being walked, takes the selected
# thread's innermost real frame and says that its caller sees the fiber's
# saved frame: pc = the return address, rsp = sp + 0x40, and the six saved
# registers. From there gdb unwinds with the code's own CFI, exactly as it
# would a thread; the borrowed frame itself is never shown. Afterwards the
# unwinder is disarmed, the thread's frames are built again from its real
# registers, and the frame selected before is selected again.
#
# The layouts of the registry (src/sched/sched.h) come from the debug
# information; only the enumerators' values fall back to the tables
# below when the compiler left the enums out of it (it drops unused
# types). Keep the tables in step with sched.h.

import os

import gdb
import gdb.unwinder

_FSTATE_FALLBACK = ["FS_FREE", "FS_RUNNABLE", "FS_RUNNING", "FS_PARKED", "FS_DONE"]
_WAIT_FALLBACK = [
    "WAIT_NONE", "WAIT_JOIN", "WAIT_SLEEP", "WAIT_MUTEX", "WAIT_COND", "WAIT_WG",
    "WAIT_SEM", "WAIT_CHAN_SEND", "WAIT_CHAN_RECV", "WAIT_SELECT", "WAIT_FD_READ",
    "WAIT_FD_WRITE", "WAIT_FD_RW", "WAIT_BLOCKING", "WAIT_MIGRATE",
]
_WSTATE_FALLBACK = ["WS_SCHED", "WS_RUNNING", "WS_SEARCHING", "WS_PARKED", "WS_STOPPED"]
_RT_STATES = ["stopped", "starting", "running", "stopping"]
_WSTATE_TEXT = {"WS_SCHED": "scheduling", "WS_RUNNING": "running",
                "WS_SEARCHING": "searching", "WS_PARKED": "idle",
                "WS_STOPPED": "stopped"}

# The frame weft__ctx_jump leaves on a suspended stack (x86_64_sysv.S).
_SAVED_FRAME = 0x40
_SAVED_REGS = (("r12", 0x08), ("r13", 0x10), ("r14", 0x18), ("r15", 0x20),
               ("rbx", 0x28), ("rbp", 0x30))
_SAVED_RA = 0x38

# A fiber's name buffer (WEFT__FIBER_NAME), NUL-terminated.
_NAME_MAX = 32

# info weft-fibers unwinds at most this many fibers to say where they wait.
_WHERE_MAX = 1000

_NO_DEBUG = ("weft-gdb: gdb has no debug information for weft's internals "
             "(struct %s): build libweft with -g (meson buildtype debug or "
             "debugoptimized, or add -Dc_args=-g) or load its debug symbols")


class _Weft:
    """The types and symbols of one look at the inferior."""

    def __init__(self):
        if not gdb.selected_inferior().threads():
            raise gdb.GdbError("weft-gdb: no process and no core file")
        try:
            arch = gdb.selected_inferior().architecture().name()
        except (AttributeError, gdb.error):
            arch = "i386:x86-64"
        if "x86-64" not in arch:
            raise gdb.GdbError("weft-gdb: only x86-64 is supported, not %s" % arch)
        self.fiber_t = _lookup("struct weft_fiber")
        self.rt_t = _lookup("struct weft__runtime")
        _lookup("struct worker")  # only to say which types are missing
        try:
            addr = int(gdb.parse_and_eval("(unsigned long)&weft__rt"))
        except gdb.error:
            raise gdb.GdbError("weft-gdb: no symbol weft__rt: the program does "
                               "not use weft, or libweft is stripped or not "
                               "loaded yet")
        self.rt = gdb.Value(addr).cast(self.rt_t.pointer()).dereference()
        self.fstate = _enum_names("enum weft__fstate", _FSTATE_FALLBACK)
        self.wait = _enum_names("enum weft__wait", _WAIT_FALLBACK)
        self.wstate = _enum_names("enum weft__wstate", _WSTATE_FALLBACK)
        self.fs = {name: value for value, name in self.fstate.items()}
        self.inferior = gdb.selected_inferior()
        self.ptr_size = gdb.lookup_type("void").pointer().sizeof

    # ---- the registry --------------------------------------------------

    def fibers(self):
        """Every block whose rstate is not FS_FREE, as gdb.Values."""
        fiber_size = self.fiber_t.sizeof
        rstate_off = self.fiber_t["rstate"].bitpos // 8
        try:
            slab_t = gdb.lookup_type("struct fiber_slab")
            batch = slab_t["f"].type.range()[1] + 1
            first_off = slab_t["f"].bitpos // 8
        except (gdb.error, KeyError):
            # fiber.c's own debug info is missing; the layout is
            # { next; f[WEFT__FIBER_BATCH] } with f aligned as a fiber is.
            batch = 256
            align = getattr(self.fiber_t, "alignof", 64) or 64
            first_off = (self.ptr_size + align - 1) // align * align
        fiber_p = self.fiber_t.pointer()
        seen = set()
        slab = int(self.rt["slabs"])
        while slab and slab not in seen:
            seen.add(slab)
            base = slab + first_off
            blob = bytes(self.inferior.read_memory(base, batch * fiber_size))
            for i in range(batch):
                if blob[i * fiber_size + rstate_off] != self.fs.get("FS_FREE", 0):
                    yield gdb.Value(base + i * fiber_size).cast(fiber_p).dereference()
            slab = self._read_ptr(slab)

    def _read_ptr(self, addr):
        return int.from_bytes(bytes(self.inferior.read_memory(addr, self.ptr_size)),
                              "little")

    def workers(self):
        n = int(self.rt["nworkers"])
        base = self.rt["workers"]
        if not int(base):
            return []
        return [base[i] for i in range(n)]

    def running_on(self):
        """{fiber address: worker index} for the fibers workers run now."""
        on = {}
        for w in self.workers():
            for field in ("running", "current"):
                p = int(w[field])
                if p:
                    on.setdefault(p, int(w["index"]))
        return on

    def find(self, fid):
        """The fiber with that id, or None."""
        for f in self.fibers():
            if int(f["id"]) == fid:
                return f
        return None

    def registry_hint(self):
        """A note for an empty registry in a runtime that has slabs."""
        if int(self.rt["slabs"]) == 0 or next(self.fibers(), None) is not None:
            return ""
        return " (the registry is empty: was weft built with -Dregistry=false?)"


def _lookup(name):
    try:
        return gdb.lookup_type(name)
    except gdb.error:
        raise gdb.GdbError(_NO_DEBUG % name.split()[-1])


def _enum_names(name, fallback):
    """{value: enumerator name}, from the debug info when it has the enum."""
    try:
        t = gdb.lookup_type(name)
        names = {int(f.enumval): f.name for f in t.fields()}
        if names:
            return names
    except gdb.error:
        pass
    return dict(enumerate(fallback))


def _u(v):
    return int(v) & ((1 << (8 * v.type.sizeof)) - 1)


def _symbolize(pc, is_return=False):
    """'func (file:line)' for a code address; a return address names the
    call (looked up at pc - 1)."""
    if not pc:
        return "-"
    look = pc - 1 if is_return else pc
    name = None
    try:
        block = gdb.block_for_pc(look)
        while block is not None and block.function is None:
            block = block.superblock
        if block is not None:
            name = block.function.print_name
    except RuntimeError:
        pass
    if name is None:
        try:
            text = gdb.execute("info symbol 0x%x" % look, to_string=True)
            if not text.startswith("No symbol"):
                # "f + 41 in section .text": the function is enough.
                name = text.split(" in section")[0].split(" + ")[0].strip()
        except gdb.error:
            pass
    text = name or "0x%x" % pc
    sal = gdb.find_pc_line(look)
    if sal.symtab is not None and sal.line:
        text += " (%s:%d)" % (sal.symtab.filename, sal.line)
    return text


def _wait_text(weft, f):
    why = weft.wait.get(_u(f["wait"]), "WAIT_NONE")
    obj = _u(f["wait_obj"])
    if why == "WAIT_JOIN":
        return "join fiber %d" % obj
    if why == "WAIT_SLEEP":
        deadline = obj - (1 << 64) if obj >> 63 else obj
        text = "sleep until %.3f s" % (deadline / 1e9)
        # `since` is when it parked, in ms on the same clock (32 bits).
        ahead = ((deadline // 1000000) - _u(f["since"])) & 0xFFFFFFFF
        if ahead < 1 << 31:
            text += " (%.1f s after it parked)" % (ahead / 1e3)
        return text
    if why in ("WAIT_FD_READ", "WAIT_FD_WRITE", "WAIT_FD_RW"):
        fd = obj - (1 << 64) if obj >> 63 else obj
        return "fd %d %s" % (fd, {"WAIT_FD_READ": "read", "WAIT_FD_WRITE": "write",
                                  "WAIT_FD_RW": "read+write"}[why])
    if why == "WAIT_BLOCKING":
        return "blocking call %s" % _symbolize(obj)
    if why == "WAIT_MIGRATE":
        return "migrate to worker %d" % obj
    if why == "WAIT_NONE":
        return "unknown"
    label = {"WAIT_MUTEX": "mutex", "WAIT_COND": "cond", "WAIT_WG": "wg",
             "WAIT_SEM": "sem", "WAIT_CHAN_SEND": "chan send",
             "WAIT_CHAN_RECV": "chan recv", "WAIT_SELECT": "select"}.get(why)
    if label is None:
        label = why.lower()
    return "%s 0x%x" % (label, obj)


def _fiber_name(weft, f):
    p = int(f["name"])
    if not p:
        return ""
    try:
        raw = bytes(weft.inferior.read_memory(p, _NAME_MAX))
    except gdb.MemoryError:
        return "?"
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _state_of(weft, f):
    return weft.fstate.get(_u(f["rstate"]), "FS_?")


def _is_suspended(weft, f, running):
    return (int(f["ctx"]["stack"]) != 0 and int(f.address) not in running and
            _state_of(weft, f) in ("FS_PARKED", "FS_RUNNABLE"))


def _resume_pc(weft, f):
    """The return address in f's saved frame; None when it cannot be read
    or reads as 0 (its stack is not in the core file: see _NO_STACK)."""
    try:
        return weft._read_ptr(int(f["ctx"]["sp"]) + _SAVED_RA) or None
    except gdb.MemoryError:
        return None


_NO_STACK = ("weft-bt: the saved frame of fiber %d (sp 0x%x) cannot be read or "
             "reads as zeros: its stack is not in the memory gdb sees. gdb's gcore "
             "leaves out whole mappings that it cannot read entirely, such as "
             "stacks with MADV_GUARD_INSTALL guard pages (Linux >= 6.13)")


def _thread_of(pthread):
    """The gdb thread number of a pthread_t, or None."""
    for t in gdb.selected_inferior().threads():
        try:
            h = t.handle()
        except (gdb.error, RuntimeError, AttributeError):
            continue
        if h is not None and int.from_bytes(bytes(h), "little") == pthread:
            return t.num
    return None


def _table(rows, out):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths)]
        out.append("  " + "  ".join(cells).rstrip())


class InfoWeftFibers(gdb.Command):
    """List weft's workers and every fiber of the registry.

Usage: info weft-fibers

For each fiber: its id, name, state, what it waits for when parked (its
object: a channel, mutex, fd, deadline, joined fiber...), the worker it
last ran on, and for a suspended fiber (parked or runnable, with a saved
context) where: the innermost frame of its stack that is the program's
code (has debug information and is not weft's), or else the return
address of its context switch. A fiber not started yet shows the
function it will run. `weft-bt ID` shows the whole backtrace of one."""

    def __init__(self):
        super().__init__("info weft-fibers", gdb.COMMAND_STATUS)

    def invoke(self, arg, from_tty):
        if arg.strip():
            raise gdb.GdbError("usage: info weft-fibers")
        weft = _Weft()
        out = []
        state = int(weft.rt["state"])
        workers = weft.workers()
        out.append("weft runtime: %s, %d worker%s" % (
            _RT_STATES[state] if 0 <= state < len(_RT_STATES) else str(state),
            len(workers), "" if len(workers) == 1 else "s"))
        fiber_ids = {}
        fibers = list(weft.fibers())
        for f in fibers:
            fiber_ids[int(f.address)] = int(f["id"])
        if workers:
            rows = [("Worker", "Thread", "State", "Running", "Deque", "Runnext", "Inbox")]
            for w in workers:
                running = int(w["running"])
                wst = weft.wstate.get(_u(w["wstate"]), "?")
                dq = w["dq"]
                size = max(0, int(dq["bottom"]) - int(dq["top"]))
                runnext = int(w["runnext"])
                thread = _thread_of(_u(w["thread"]))
                rows.append((
                    str(int(w["index"])),
                    str(thread) if thread is not None else "?",
                    "running" if running else _WSTATE_TEXT.get(wst, wst),
                    _id_text(fiber_ids, running),
                    str(size),
                    _id_text(fiber_ids, runnext),
                    str(_u(w["inbox_len"])),
                ))
            _table(rows, out)
        running = weft.running_on()
        out.append("%d fiber%s:" % (len(fibers), "" if len(fibers) == 1 else "s")
                   + (weft.registry_hint() if not fibers and state else ""))
        if fibers:
            rows = [("Id", "Name", "State", "Worker", "Wait", "Where")]
            suspended = sum(1 for f in fibers if _is_suspended(weft, f, running))
            walk = None
            if 0 < suspended <= _WHERE_MAX:
                try:
                    walk = _FiberFrames()
                except gdb.GdbError:
                    pass  # no thread frame to borrow: return addresses only
            try:
                for f in sorted(fibers, key=lambda f: int(f["id"])):
                    rows.append(_fiber_row(weft, f, running, walk))
            finally:
                if walk is not None:
                    walk.close()
            _table(rows, out)
            if suspended > _WHERE_MAX:
                out.append("(over %d suspended fibers: \"Where\" is where the switch "
                           "returns to; weft-bt ID unwinds one)" % _WHERE_MAX)
        gdb.write("\n".join(out) + "\n")


def _fiber_row(weft, f, running, walk):
    st = _state_of(weft, f)
    if int(f.address) in running:
        where = "(running on worker %d)" % running[int(f.address)]
        st = "FS_RUNNING"
    elif _is_suspended(weft, f, running):
        ra = _resume_pc(weft, f)
        where = None
        if ra is None:
            where = "(saved frame unreadable)"
        elif walk is not None:
            where = _first_outside(walk, int(f["ctx"]["sp"]))
        if where is None:
            where = _symbolize(ra, is_return=True)
    elif st == "FS_RUNNABLE" and not int(f["ctx"]["stack"]):
        where = "(not started: %s)" % _symbolize(int(f["fn"]))
    else:
        where = "-"
    never_ran = st == "FS_RUNNABLE" and not int(f["ctx"]["stack"])
    return (str(int(f["id"])), _fiber_name(weft, f),
            st[3:].lower() if st.startswith("FS_") else st,
            "-" if never_ran else str(_u(f["worker"])),
            _wait_text(weft, f) if st == "FS_PARKED" else "",
            where)


def _weft_src_dir():
    """The directory of weft's sources (the one holding sched/ and ctx/),
    from the debug info; None without it."""
    try:
        sym = gdb.lookup_global_symbol("weft__park")
        if sym is not None and sym.symtab is not None:
            return os.path.dirname(os.path.dirname(sym.symtab.fullname()))
    except gdb.error:
        pass
    return None


def _first_outside(walk, sp):
    """'func (file:line)' of the innermost frame of the suspended context
    at sp that is the program's code: one with debug information, from
    outside weft's sources. None if there is none in the first frames
    (frames without debug information are passed over: in a build of weft
    without it, they are mostly weft's)."""
    src_dir = _weft_src_dir()
    for n, frame in enumerate(walk.frames(sp)):
        if isinstance(frame, str) or n >= 32:
            return None
        try:
            sal = frame.find_sal()
            if sal.symtab is None or not sal.line:
                continue
            if src_dir and sal.symtab.fullname().startswith(src_dir + os.sep):
                continue
        except gdb.error:
            continue
        return "%s (%s:%d)" % (frame.name() or "0x%x" % frame.pc(),
                               sal.symtab.filename, sal.line)
    return None


def _id_text(ids, p):
    if not p:
        return "-"
    return str(ids[p]) if p in ids else "0x%x" % p


class _FrameId:
    def __init__(self, sp, pc):
        self.sp = gdb.Value(sp)
        self.pc = gdb.Value(pc)


class _FiberUnwinder(gdb.unwinder.Unwinder):
    """While armed (by _fiber_frames only), unwinds the selected thread's
    innermost real frame as if its caller were the suspended fiber's
    switch: with the registers weft__ctx_jump saved at sp."""

    def __init__(self):
        super().__init__("weft-fiber")
        self.sp = None
        self.level = 0
        self.resume_pc = 0

    def __call__(self, pending):
        if self.sp is None or pending.level() != self.level:
            return None
        sp = self.sp
        words = bytes(gdb.selected_inferior().read_memory(sp, _SAVED_FRAME))

        def word(off):
            return int.from_bytes(words[off:off + 8], "little")

        info = pending.create_unwind_info(_FrameId(sp + _SAVED_FRAME, self.resume_pc))
        regs = [(name, word(off)) for name, off in _SAVED_REGS]
        regs += [("rip", word(_SAVED_RA)), ("rsp", sp + _SAVED_FRAME)]
        for name, val in regs:
            t = pending.read_register(name).type
            info.add_saved_register(name, gdb.Value(val).cast(t))
        return info


_unwinder = _FiberUnwinder()
gdb.unwinder.register_unwinder(None, _unwinder, replace=True)


class _FiberFrames:
    """The frames of suspended contexts, one after the other; the frame
    selected before is selected again at the end.

    gdb cannot be shown a frame that is not on a thread without writing
    the thread's registers, which a core file does not allow. So the
    unwinder above takes the selected thread's innermost real (not
    inline) frame, the "hook", and gives it the fiber's saved frame as
    its caller: the hook's caller is the code weft__ctx_jump returns to,
    and gdb unwinds on from there with the code's CFI. The hook itself is
    not part of the fiber and is never shown."""

    def __init__(self):
        try:
            self.resume_pc = int(gdb.parse_and_eval("(unsigned long)&weft__ctx_resume_pc"))
        except gdb.error:
            raise gdb.GdbError("weft-gdb: no symbol weft__ctx_resume_pc "
                               "(libweft stripped?)")
        try:
            self.before = gdb.selected_frame()
            self.before_level = self.before.level()
            frame, level = gdb.newest_frame(), 0
            while frame.type() == gdb.INLINE_FRAME and frame.older() is not None:
                frame, level = frame.older(), level + 1
        except gdb.error:
            raise gdb.GdbError("weft-gdb: the selected thread has no frames to start "
                               "from (no process or core file, or the thread runs)")
        self.hook_level = level

    def frames(self, sp):
        """The fiber's frames, innermost first, starting with the frame
        weft__ctx_jump returns to. Valid until the next call."""
        _unwinder.sp, _unwinder.level = sp, self.hook_level
        _unwinder.resume_pc = self.resume_pc
        gdb.invalidate_cached_frames()
        frame = gdb.newest_frame()
        for _ in range(self.hook_level):
            frame = frame.older()
        while True:
            try:
                frame = frame.older()
            except gdb.error as e:
                yield "(backtrace stopped: %s)" % e
                return
            if frame is None:
                return
            yield frame

    def close(self):
        _unwinder.sp = None
        gdb.invalidate_cached_frames()
        try:
            if self.before.is_valid():
                self.before.select()
                return
        except gdb.error:
            pass
        try:
            frame, level = gdb.newest_frame(), self.before_level
            while level > 0 and frame.older() is not None:
                frame, level = frame.older(), level - 1
            frame.select()
        except gdb.error:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _split_limit(arg):
    """'EXPR [LIMIT]' -> (EXPR, LIMIT): the whole of arg when it parses as
    an expression (which may have spaces in it), else its last word is
    the limit."""
    if not arg:
        raise gdb.GdbError("usage: weft-bt ID [LIMIT]")
    try:
        gdb.parse_and_eval(arg)
        return arg, 64
    except gdb.error as e:
        head, _, tail = arg.rpartition(" ")
        if not head.strip() or not tail.isdigit():
            raise gdb.GdbError("weft-bt: %s" % e)
        return head.strip(), max(1, int(tail))


def _frame_text(n, frame):
    pc = frame.pc()
    text = "#%-3d 0x%016x in %s" % (n, pc, frame.name() or "??")
    try:
        sal = frame.find_sal()
        if sal.symtab is not None and sal.line:
            text += " (%s:%d)" % (sal.symtab.filename, sal.line)
        else:
            obj = gdb.solib_name(pc)
            if obj:
                text += " from %s" % obj
    except gdb.error:
        pass
    return text


def _stop_text(frame):
    why = frame.unwind_stop_reason()
    if why in (gdb.FRAME_UNWIND_NO_REASON, gdb.FRAME_UNWIND_OUTERMOST):
        return None
    return "(backtrace stopped: %s)" % gdb.frame_stop_reason_string(why)


class WeftBt(gdb.Command):
    """Backtrace of a suspended weft fiber.

Usage: weft-bt ID [LIMIT]

ID is a fiber id (as `info weft-fibers` lists them) or any expression
giving one, or a `struct weft_fiber *`. LIMIT caps the frames shown
(default 64). Works for fibers that are parked or runnable with a saved
context; a running fiber's stack is its worker thread's: select that
thread and use `bt`. Frame #0 is the context switch (weft__ctx_jump)
where the fiber resumes."""

    def __init__(self):
        super().__init__("weft-bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        expr, limit = _split_limit(arg.strip())
        weft = _Weft()
        try:
            v = gdb.parse_and_eval(expr)
        except gdb.error as e:
            raise gdb.GdbError("weft-bt: %s" % e)
        if v.type.strip_typedefs().code == gdb.TYPE_CODE_PTR:
            f = v.cast(weft.fiber_t.pointer()).dereference()
            fid = int(f["id"])
            if _state_of(weft, f) == "FS_FREE":
                raise gdb.GdbError("weft-bt: 0x%x is not a fiber now (its block is free)"
                                   % int(v))
        else:
            fid = int(v)
            f = weft.find(fid)
            if f is None:
                raise gdb.GdbError("weft-bt: no fiber with id %d%s"
                                   % (fid, weft.registry_hint()))
        running = weft.running_on()
        st = _state_of(weft, f)
        if int(f.address) in running or st == "FS_RUNNING":
            wi = running.get(int(f.address), _u(f["worker"]))
            workers = weft.workers()
            thread = _thread_of(_u(workers[wi]["thread"])) if wi < len(workers) else None
            hint = (": select it with `thread %d` and use `bt`" % thread
                    if thread is not None else "")
            raise gdb.GdbError("weft-bt: fiber %d is running on worker %d (gdb thread %s), "
                               "so it has no saved context%s"
                               % (fid, wi, thread if thread is not None else "?", hint))
        if st == "FS_DONE":
            raise gdb.GdbError("weft-bt: fiber %d has finished (it waits to be joined) "
                               "and has no stack any more" % fid)
        if not int(f["ctx"]["stack"]):
            raise gdb.GdbError("weft-bt: fiber %d has not started yet: no stack, no frames "
                               "(it will run %s)" % (fid, _symbolize(int(f["fn"]))))
        sp = int(f["ctx"]["sp"])
        if _resume_pc(weft, f) is None:
            raise gdb.GdbError(_NO_STACK % (fid, sp))
        name = _fiber_name(weft, f)
        out = ["fiber %d%s, %s, saved sp 0x%x:" % (
            fid, " '%s'" % name if name else "", st[3:].lower(), sp)]
        with _FiberFrames() as walk:
            sal = gdb.find_pc_line(walk.resume_pc)
            where = (" (%s:%d)" % (sal.symtab.filename, sal.line)
                     if sal.symtab is not None and sal.line else "")
            out.append("#0   0x%016x in weft__ctx_jump%s" % (walk.resume_pc, where))
            n, last = 1, None
            for frame in walk.frames(sp):
                if isinstance(frame, str):
                    out.append(frame)
                    last = None
                    break
                if n == limit:
                    out.append("(more frames follow: weft-bt %d LIMIT)" % fid)
                    last = None
                    break
                out.append(_frame_text(n, frame))
                n, last = n + 1, frame
            if last is not None and _stop_text(last):
                out.append(_stop_text(last))
        gdb.write("\n".join(out) + "\n")


InfoWeftFibers()
WeftBt()
