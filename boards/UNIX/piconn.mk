# Extra rules for the unix port build: make -C ports/unix -f Makefile -f THIS_FILE ...
# MicroPython v1.28.0's mpy-tool writes a NaN or infinite float constant of a frozen
# module (e.g. a folded `math.nan` or `math.inf`) as the bare C tokens `nan` / `inf`,
# which do not compile. frozen_content.c does not include <math.h>, so define them there.
$(BUILD)/frozen_content.o: CFLAGS += '-Dnan=__builtin_nan("")' '-Dinf=__builtin_inf()'
