# nn._tiers: the kernel tiers this port has, fastest first (docs/KERNELS.md).
#
#   'c'       _nn_c compiled into the firmware (piconn's `make firmware`)
#   'natmod'  the same C as a native module, nn/_nn_c_<arch>.mpy, for stock firmware
#             (mip installs it with nn: device/package.json); imported only when the
#             firmware has no _nn_c, so one C module serves nn
#   'viper'   nn._viper: @micropython.viper machine code
#   'python'  nn._python: any port
#
# A tier is left out only when it cannot exist here: its module is not installed, or
# the port cannot run its machine code. Any other error while importing a tier (a
# SyntaxError or NameError in _viper on a port with the native emitter, say) is a bug
# and is raised.
import sys

from micropython import const

from nn import _python

# .mpy architecture codes (py/persistentcode.h): sys.implementation._mpy >> 10
_ARCH_NONE = const(0)  # no native code: neither viper nor native modules
_ARCH_X64 = const(2)
_ARCH_ARMV6M = const(4)
_ARCH_ARMV7EMSP = const(7)
_ARCH_ARMV7EMDP = const(8)
_ARCH_BITS = const(0x2F)

ARCH = getattr(sys.implementation, "_mpy", 0) >> 10 & _ARCH_BITS


def _thumb(arch):
    # MicroPython runs Thumb code of any architecture from armv6m up to its own
    return _ARCH_ARMV6M <= arch <= _ARCH_ARMV7EMDP


def _native_module():
    # nn/_nn_c_<arch>.mpy for this port (the newest Thumb build it can run), or None.
    # The x64 build is for the unix port on a PC.
    try:
        if ARCH == _ARCH_X64:
            from nn import _nn_c_x64 as m  # type: ignore[attr-defined]  # a .mpy

            return m
        if ARCH >= _ARCH_ARMV7EMSP and _thumb(ARCH):
            try:
                from nn import _nn_c_armv7emsp as m  # type: ignore[attr-defined]  # a .mpy

                return m
            except ImportError:
                pass
        if _thumb(ARCH):
            from nn import _nn_c_armv6m as m  # type: ignore[attr-defined]  # a .mpy

            return m
    except ImportError:
        pass
    return None


def _viper_module():
    # nn._viper, or None where this port cannot run it
    f = globals().get("__file__", "")
    if f.endswith(".mpy") and not _thumb(ARCH):
        # nn installed compiled (device/package.json): _viper.mpy holds ARMv6-M code
        return None
    try:
        from nn import _viper
    except ImportError:
        return None
    except SyntaxError:
        if ARCH != _ARCH_NONE:
            raise
        return None  # no native emitter: '@micropython.viper' is not valid code here
    return _viper


try:
    import _nn_c  # type: ignore[import-not-found]  # the firmware's, or one on sys.path

    C_MODULE = _nn_c
except ImportError:
    C_MODULE = _native_module()

TIERS = []  # (name, module), fastest first
if C_MODULE is not None:
    # a native module has a __file__ (its .mpy); a module built into the firmware has not
    TIERS.append(("natmod" if hasattr(C_MODULE, "__file__") else "c", C_MODULE))
_v = _viper_module()
if _v is not None:
    TIERS.append(("viper", _v))
TIERS.append(("python", _python))
