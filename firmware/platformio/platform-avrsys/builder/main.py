"""SCons builder of CDS's offline PlatformIO platform: compile with the avr-gcc on PATH (Debian gcc-avr).

PlatformIO's own atmelavr platform downloads its toolchain from the registry; this one needs nothing but
`apt-get install gcc-avr avr-libc binutils-avr`, so `pio run -e uno_offline` works without network access.
"""

from SCons.Script import AlwaysBuild, Default, DefaultEnvironment  # type: ignore[import-not-found]

env = DefaultEnvironment()
mcu = env.GetProjectOption("board_build.mcu", "atmega328p")
f_cpu = env.GetProjectOption("board_build.f_cpu", "16000000UL")
env.Replace(
    AR="avr-gcc-ar", AS="avr-gcc", CC="avr-gcc", CXX="avr-g++", OBJCOPY="avr-objcopy", RANLIB="avr-gcc-ranlib",
    SIZETOOL="avr-size", ARFLAGS=["rc"], PROGSUFFIX=".elf",
    SIZEPRINTCMD="$SIZETOOL --mcu=%s -C $SOURCES" % mcu,
    UPLOADER="avrdude",
    UPLOADCMD="$UPLOADER -p %s -c arduino -P $UPLOAD_PORT -b 115200 -U flash:w:$SOURCE:i" % mcu,
)
env.Append(
    CCFLAGS=["-Os", "-mmcu=" + mcu, "-ffunction-sections", "-fdata-sections"],
    CPPDEFINES=[("F_CPU", f_cpu)],
    LINKFLAGS=["-Os", "-mmcu=" + mcu, "-Wl,--gc-sections"],
    LIBS=["m"],
)
elf = env.BuildProgram()
hexf = env.Command("$BUILD_DIR/${PROGNAME}.hex", elf, "$OBJCOPY -O ihex -R .eeprom $SOURCE $TARGET")
AlwaysBuild(env.Alias("size", elf, env.VerboseAction("$SIZEPRINTCMD", "Calculating size $SOURCE")))
AlwaysBuild(env.Alias("upload", hexf, env.VerboseAction("$UPLOADCMD", "Uploading $SOURCE")))
Default([elf, hexf])
