/* Synthetic front-end waveforms; see waveform.h. */
#include "waveform.h"

#include <math.h>

#define TWO_PI 6.283185307179586

void wave_defaults(wave_t *w)
{
    *w = (wave_t){0};
    w->freq_hz = 60.0;
    w->v_mv_per_v = 5.0;
    w->i_mv_per_a = 1000.0 / 30.0;
    w->bias_mv = 2500.0;
    w->vref_mv = 5000.0;
    w->rng = 0x9E3779B97F4A7C15ull;
}

static double uniform(wave_t *w)
{
    /* xorshift64*: deterministic, so a test run is reproducible */
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return ((w->rng * 0x2545F4914F6CDD1Dull) >> 11) * (1.0 / 9007199254740992.0);
}

static double gauss(wave_t *w)
{
    double u1 = uniform(w), u2 = uniform(w);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(TWO_PI * u2);
}

double wave_v_pin_mv(wave_t *w, double t)
{
    double a = TWO_PI * w->freq_hz * t;
    double v = sqrt(2.0) * w->vrms * (sin(a) + w->vh3 * sin(3 * a) + w->vh5 * sin(5 * a));
    double mv = w->bias_mv + w->v_dc_mv + v * w->v_mv_per_v;
    return w->noise_mv > 0 ? mv + w->noise_mv * gauss(w) : mv;
}

double wave_i_pin_mv(wave_t *w, double t)
{
    double a = TWO_PI * w->freq_hz * t - (w->phase_deg + w->sensor_lag_deg) * (TWO_PI / 360.0);
    double i = sqrt(2.0) * w->irms * (sin(a) + w->ih3 * sin(3 * a) + w->ih5 * sin(5 * a));
    double mv = w->bias_mv + w->i_dc_mv + i * w->i_mv_per_a;
    return w->noise_mv > 0 ? mv + w->noise_mv * gauss(w) : mv;
}

uint16_t wave_adc(const wave_t *w, double pin_mv)
{
    double c = floor(pin_mv * 1024.0 / w->vref_mv);
    if (c < 0)
        return 0;
    if (c > 1023)
        return 1023;
    return (uint16_t)c;
}
