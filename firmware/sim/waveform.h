/*
 * Synthetic mains waveforms as seen on the ADC pins of the meter's front end; shared by the simavr harness
 * (simmeter.c) and the host test library, so both feed the firmware the same signals.
 *
 * Front end model (matches the firmware's factory calibration, firmware/src/board.h):
 *  - voltage: ZMPT101B module trimmed to 5 mV at the ADC pin per volt of mains, biased at mid-supply (2.5 V);
 *  - current: SCT-013-030 (30 A -> 1 V rms), 33.33 mV per ampere, biased at 2.5 V.
 *
 * v(t) = sqrt2 V1 [sin wt + vh3 sin 3wt + vh5 sin 5wt]
 * i(t) = sqrt2 I1 [sin(wt - phi) + ih3 sin 3(wt - phi) + ih5 sin 5(wt - phi)]   (phi > 0: current lags)
 * so P = V1 I1 [cos phi + vh3 ih3 cos 3phi + vh5 ih5 cos 5phi].
 */
#ifndef CDS_WAVEFORM_H
#define CDS_WAVEFORM_H

#include <stdint.h>

typedef struct {
    double freq_hz;
    double vrms, irms;        /* fundamental RMS, volts and amperes */
    double phase_deg;         /* current lag of the fundamental, degrees */
    double vh3, vh5, ih3, ih5;/* harmonic amplitudes relative to the fundamental */
    double v_dc_mv, i_dc_mv;  /* extra DC offset at the pins, millivolts */
    double noise_mv;          /* Gaussian noise at the pins, millivolts RMS */
    double sensor_lag_deg;    /* extra lag of the current sensor itself (what phase_cdeg calibrates) */
    double v_mv_per_v;        /* front end scales */
    double i_mv_per_a;
    double bias_mv;
    double vref_mv;
    uint64_t rng;
} wave_t;

void wave_defaults(wave_t *w);
double wave_v_pin_mv(wave_t *w, double t);
double wave_i_pin_mv(wave_t *w, double t);
/* Pin voltage to a 10-bit ADC result (Vin x 1024 / Vref, clamped), as the ATmega328P datasheet gives it. */
uint16_t wave_adc(const wave_t *w, double pin_mv);

#endif
