/*
 * AICSS meter firmware for the ATmega328P: glue between the HAL (hal_avr.c) and the portable core
 * (metering, meter protocol state machine, frame codec, storage). The ADC interrupt feeds the metering core;
 * this loop takes finished windows, handles received bytes and runs the protocol timers, then sleeps until the
 * next interrupt.
 */
#include <avr/io.h>
#include <string.h>

#include "../lib/board.h"
#include "../lib/pstr.h"
#include "../lib/meter/meter.h"
#include "../lib/metering/metering.h"
#include "hal_avr.h"

static metering_t s_metering;
static meter_t s_meter;

static void uart_tx(const uint8_t *data, uint8_t len, void *ctx)
{
    (void)ctx;
    hal_uart_write(data, len);
}

static const char *reset_note(uint8_t mcusr)
{
    if (mcusr & _BV(WDRF)) return CDS_STR("boot: watchdog reset");
    if (mcusr & _BV(BORF)) return CDS_STR("boot: brown-out reset");
    if (mcusr & _BV(EXTRF)) return CDS_STR("boot: external reset");
    if (mcusr & _BV(PORF)) return CDS_STR("boot: power-on reset");
    return CDS_STR("boot");
}

static void apply_config(uint16_t freq_mhz)
{
    uint32_t pairs = metering_window_pairs(s_meter.calib.report_period_ms, BOARD_PAIR_RATE_HZ);
    uint16_t back = metering_back_q8(s_meter.calib.phase_cdeg, freq_mhz, BOARD_PAIR_RATE_HZ);
    hal_atomic_begin();
    metering_configure(&s_metering, pairs, back);
    hal_atomic_end();
}

int main(void)
{
    static const meter_identity_t id_flash CDS_FLASH = {
        .device_id = BOARD_DEVICE_ID,
        .fw_major = FW_MAJOR, .fw_minor = FW_MINOR, .fw_patch = FW_PATCH, .hw_rev = HW_REV,
        .factory = {FACTORY_PERIOD_MS, FACTORY_V_GAIN, FACTORY_I_GAIN, FACTORY_PHASE_CDEG},
        .pair_rate_hz = BOARD_PAIR_RATE_HZ,
    };
    meter_identity_t id;
    uint16_t freq_mhz = 0;

    cds_flash_copy(&id, &id_flash, sizeof id);

    metering_init(&s_metering, metering_window_pairs(FACTORY_PERIOD_MS, BOARD_PAIR_RATE_HZ));
    hal_init(&s_metering);
    meter_boot(&s_meter, &id, uart_tx, 0, hal_millis(), reset_note(hal_reset_cause()));

    for (;;) {
        metering_acc_t acc;
        uint8_t got, overrun;
        int16_t c;
        uint32_t now = hal_millis();

        hal_watchdog_kick();
        while ((c = hal_uart_getc()) >= 0)
            meter_rx(&s_meter, (uint8_t)c, now);
        if (s_meter.reconfigure) {
            s_meter.reconfigure = 0;
            apply_config(freq_mhz);
        }

        hal_atomic_begin();
        got = metering_take(&s_metering, &acc);
        overrun = s_metering.overrun;
        s_metering.overrun = 0;
        hal_atomic_end();
        if (overrun) /* a window finished before the previous one was taken: its reading is missing */
            meter_log(&s_meter, 2, CDS_STR("metering window overrun: one reading lost"));
        if (got) {
            metering_result_t r;
            metering_compute(&acc, &s_meter.calib, BOARD_PAIR_RATE_HZ, &r);
            s_meter.sample_rate_hz = hal_pair_rate();
            meter_window(&s_meter, &r, hal_window_end_ms());
            if (r.freq_mhz && r.freq_mhz != freq_mhz) {
                freq_mhz = r.freq_mhz; /* the phase correction follows the line frequency */
                apply_config(freq_mhz);
            }
        }
        meter_poll(&s_meter, hal_millis());
        hal_idle();
    }
}
