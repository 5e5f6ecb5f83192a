/* Arm semihosting calls used by the emulated-target harness (QEMU: -semihosting-config enable=on). */
#ifndef TW_SEMIHOST_H
#define TW_SEMIHOST_H

/* Write a NUL-terminated string to the host's console (SYS_WRITE0). */
void tw_sh_write0(const char *s);

/* Stop the emulator: ok != 0 exits QEMU with status 0, otherwise with status 1 (SYS_EXIT). */
void tw_sh_exit(int ok) __attribute__((noreturn));

#endif
