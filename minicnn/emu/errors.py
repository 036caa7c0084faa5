"""Errors raised by the CUDA emulator."""


class EmulatorError(RuntimeError):
    """A kernel misbehaved under emulation: race, out-of-bounds access, barrier divergence,
    argument type mismatch. The message names the kernel, block and thread."""


class EmulatorCompileError(EmulatorError):
    """g++ could not compile a kernel source; the message carries g++'s file:line errors."""
