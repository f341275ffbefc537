/*
 * Continuous metering maths for a two-channel (V on one ADC input, I on another) energy meter.
 *
 * Portable C, no register access: the HAL's ADC interrupt hands every (V, I) conversion pair to
 * metering_add_pair(); the main loop takes a finished window with metering_take() and turns it into physical
 * values with metering_compute(). Unlike EmonLib's "sample N times then stop" windows, no sample is ever
 * skipped: the windows are back to back, so the energy register integrates every conversion.
 *
 * Sampling model: the ADC converts V, then I one conversion later, then V again. A pair (v[n], i[n]) therefore
 * has i[n] taken exactly half way between v[n] and v[n+1]. The V/I skew is removed by linear interpolation of V
 * at the instant of each I sample (shifted further by the sensor phase calibration `phase_cdeg`); the small
 * amplitude loss of linear interpolation is compensated at the measured line frequency.
 *
 * DC removal: a slow high-pass (first-order IIR, time constant 8192 pairs) centres the samples so the fixed-point
 * sums stay small and the zero-crossing detector sees a signal around 0; the exact per-window mean is then
 * removed from the sums (variance = mean of squares - square of mean), so a residual offset never biases RMS or P.
 */
#ifndef CDS_METERING_H
#define CDS_METERING_H

#include <stdint.h>

#define METERING_ADC_MAX 1023
#define METERING_CLIP_LOW 2
#define METERING_CLIP_HIGH (METERING_ADC_MAX - 2)
#define METERING_VHIST 8
/* Zero-crossing hysteresis, in Q4 counts: the detector re-arms only after V went below -8 counts. */
#define METERING_ZC_HYST (8 * 16)

#define METERING_CLIP_V 0x01u
#define METERING_CLIP_I 0x02u

/* Sums over one window; sample values are in Q4 ADC counts after the high-pass. */
typedef struct {
    int64_t sum_v, sum_i;
    int64_t sum_vv, sum_ii, sum_vi;
    uint32_t n;               /* pairs in the window */
    uint32_t first_cross_q8;  /* pair counter (Q8) of the first rising zero crossing */
    uint32_t last_cross_q8;
    uint16_t crossings;
    uint8_t clip;
    uint16_t back_q8;         /* interpolation distance used for this window */
} metering_acc_t;

typedef struct {
    /* interrupt-side state */
    int32_t v_off_q16, i_off_q16;
    int16_t vh[METERING_VHIST];
    uint8_t vh_head;
    uint8_t warm;             /* pairs seen, saturating: history is valid once >= METERING_VHIST */
    int16_t i_d1, i_d2;       /* I delayed by one and two pairs */
    int16_t zc_prev;
    uint8_t zc_armed;
    uint32_t tick;            /* free-running pair counter */
    uint16_t back_q8;         /* (1.5 + phase shift) pairs, Q8: how far back from the newest V the I sits */
    uint32_t window_pairs;
    metering_acc_t acc;
    /* hand-over to the main loop */
    metering_acc_t done;
    volatile uint8_t done_ready;
    volatile uint8_t overrun; /* a finished window was not taken before the next one finished */
} metering_t;

typedef struct {
    uint32_t vrms_mv;
    uint32_t irms_ma;
    int32_t p_mw;             /* active power, milliwatts (signed) */
    uint32_t s_mva;
    int16_t pf_milli;
    uint16_t freq_mhz;        /* 0 when no frequency could be measured */
    uint8_t clip;
    uint32_t pairs;
} metering_result_t;

/* Calibration as carried by CONFIG (docs/protocol.md). */
typedef struct {
    uint32_t report_period_ms;
    uint32_t v_gain;   /* microvolts of mains per ADC count */
    uint32_t i_gain;   /* microamperes per ADC count */
    int16_t phase_cdeg;
} calib_t;

void metering_init(metering_t *m, uint32_t window_pairs);
/* Interrupt context: one V conversion and the I conversion that followed it (raw 10-bit counts). */
void metering_add_pair(metering_t *m, uint16_t v_raw, uint16_t i_raw);
/* Main context, with the pair interrupt masked by the caller: copy a finished window out. Returns 1 if one was. */
uint8_t metering_take(metering_t *m, metering_acc_t *out);
/* Main context, with the pair interrupt masked by the caller: new window length / phase for the next window. */
void metering_configure(metering_t *m, uint32_t window_pairs, uint16_t back_q8);

/* Interpolation distance for a sensor phase error at a line frequency (0 = unknown, assume 60 Hz). */
uint16_t metering_back_q8(int16_t phase_cdeg, uint16_t freq_mhz, uint16_t pair_rate_hz);
uint32_t metering_window_pairs(uint32_t report_period_ms, uint16_t pair_rate_hz);
void metering_compute(const metering_acc_t *a, const calib_t *c, uint16_t pair_rate_hz, metering_result_t *r);

/* One cumulative energy register with its sub-mWh remainder, so that nothing is lost to rounding. */
typedef struct {
    uint64_t mwh;
    uint32_t rem;      /* mW x pairs not yet worth one mWh: always below 3600 x pair rate */
} energy_t;

/* A bidirectional meter's two registers. A window's active energy (its mean power, so netted within the window
 * as any meter does) adds to `imp` when it flows from the grid (P > 0) and its magnitude to `exp` when it flows to
 * the grid (P < 0, an inverter exporting). The two are never netted against each other: the SCEE bill needs
 * consumption and injection separately, and a net register could not be split again. Both only grow, so
 * consumers compute each from its own deltas, exactly as for a one-register meter. */
typedef struct {
    energy_t imp;
    energy_t exp;
} energy_regs_t;

/* Adds p_mw x pairs to one register if p_mw > 0 (nothing otherwise). */
void energy_add(energy_t *e, int32_t p_mw, uint32_t pairs, uint16_t pair_rate_hz);
/* Adds one window's signed active energy to the register of its direction. */
void energy_regs_add(energy_regs_t *e, int32_t p_mw, uint32_t pairs, uint16_t pair_rate_hz);

#endif
