/* Arm semihosting over the Thumb `bkpt 0xAB` trap: r0 holds the operation, r1 its argument. */
#include "semihost.h"

#define TW_SYS_WRITE0 0x04
#define TW_SYS_EXIT 0x18
/* SYS_EXIT reasons (Arm semihosting spec, section 5.4.1); QEMU maps ApplicationExit to status 0 and
 * every other reason to status 1, which is how a failed run reaches the Python side. */
#define TW_ADP_STOPPED_APPLICATION_EXIT 0x20026
#define TW_ADP_STOPPED_RUNTIME_ERROR 0x20023

static int tw_semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void tw_sh_write0(const char *s)
{
    (void)tw_semihost(TW_SYS_WRITE0, s);
}

void tw_sh_exit(int ok)
{
    /* On AArch32 the reason code itself is the argument, not a pointer to a block. */
    (void)tw_semihost(TW_SYS_EXIT, (const void *)(ok ? TW_ADP_STOPPED_APPLICATION_EXIT
                                                     : TW_ADP_STOPPED_RUNTIME_ERROR));
    for (;;) {
    }
}
