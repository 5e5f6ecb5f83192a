/* Vector table and reset handler for the emulated Cortex-M4 (mps2-an386) and other ARMv6-M/v7-M cores.
 *
 * Reset copies .data from flash, zeroes .bss, runs main() and reports its return value through
 * semihosting, so QEMU always terminates: a fault prints its name and exits with status 1 instead of
 * spinning until the test's timeout. */
#include <stdint.h>

#include "semihost.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);

void Reset_Handler(void);
static void tw_fault(const char *name) __attribute__((noreturn));
static void NMI_Handler(void) { tw_fault("fault: NMI\n"); }
static void HardFault_Handler(void) { tw_fault("fault: HardFault\n"); }
static void MemManage_Handler(void) { tw_fault("fault: MemManage\n"); }
static void BusFault_Handler(void) { tw_fault("fault: BusFault\n"); }
static void UsageFault_Handler(void) { tw_fault("fault: UsageFault\n"); }
static void Unexpected_Handler(void) { tw_fault("fault: unexpected exception\n"); }

/* The first 16 entries of the ARMv7-M table; the harness enables no peripheral interrupts. */
__attribute__((section(".isr_vector"), used)) static void (*const tw_vectors[16])(void) = {
    (void (*)(void))(&_estack),
    Reset_Handler,
    NMI_Handler,
    HardFault_Handler,
    MemManage_Handler,
    BusFault_Handler,
    UsageFault_Handler,
    0, 0, 0, 0,
    Unexpected_Handler, /* SVCall */
    Unexpected_Handler, /* DebugMonitor */
    0,
    Unexpected_Handler, /* PendSV */
    Unexpected_Handler, /* SysTick */
};

static void tw_fault(const char *name)
{
    tw_sh_write0(name);
    tw_sh_exit(0);
}

void Reset_Handler(void)
{
    uint32_t *src = &_sidata;
    for (uint32_t *dst = &_sdata; dst < &_edata;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0u;
    }
#if defined(__ARM_FP) && !defined(__SOFTFP__)
    /* A hard-float build (cortex-m4f) must grant access to CP10/CP11 (the FPU) in CPACR before the
     * first floating-point instruction, or that instruction faults. */
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    tw_sh_exit(main() == 0);
}
