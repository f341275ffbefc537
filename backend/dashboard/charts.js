// Charts of the dashboard, drawn with Plotly.js (served by the backend from the `plotly` Python package, see
// backend/api/dashboard.py; no CDN). Plotly gives zoom and pan, tooltips that open on touch, and axes that pick
// readable ticks; this file adds what the data means: pt-BR dates and numbers, kWh units, posto colours for hourly
// views, estimated and partial buckets marked, and no bar at all where there is no data (a gap, never a 0).
"use strict";

// Plotly's locale format for pt-BR: month and day names, decimal comma, thousands dot.
const PT_BR_LOCALE = {
  moduleType: "locale", name: "pt-BR", dictionary: {},
  format: {
    days: ["domingo", "segunda", "terça", "quarta", "quinta", "sexta", "sábado"],
    shortDays: ["dom", "seg", "ter", "qua", "qui", "sex", "sáb"],
    months: ["janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro", "outubro",
      "novembro", "dezembro"],
    shortMonths: ["jan", "fev", "mar", "abr", "mai", "jun", "jul", "ago", "set", "out", "nov", "dez"],
    date: "%d/%m/%Y", decimal: ",", thousands: ".",
  },
};
const POSTO_COLOURS = { "Ponta": "#c0392b", "Intermediário": "#e0a800", "Fora ponta": "#2f7fc1" };
const BAR = "#2f7fc1";
const SERIES_COLOURS = ["#2f7fc1", "#0b6e4f", "#e0a800", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d35400"];
// Tick and hover formats per grouping (d3 time formats, rendered with the pt-BR locale above).
const TIME_FORMATS = {
  "15min": { tick: "%H:%M\n%d/%m", hover: "%d/%m/%Y %H:%M" },
  hour: { tick: "%H h\n%d/%m", hover: "%d/%m/%Y %H h" },
  day: { tick: "%d/%m", hover: "%a %d/%m/%Y" },
  week: { tick: "%d/%m", hover: "semana de %d/%m/%Y" },
  month: { tick: "%b %Y", hover: "%B de %Y" },
};
let plotlyReady = null;

// Plotly is loaded with `defer` so the cards with numbers appear before the 4 MB library is parsed.
function withPlotly() {
  if (!plotlyReady) {
    plotlyReady = new Promise((resolve) => {
      const ready = () => { Plotly.register(PT_BR_LOCALE); resolve(window.Plotly); };
      if (window.Plotly) ready(); else window.addEventListener("load", ready, { once: true });
    });
  }
  return plotlyReady;
}

// "2026-05-01T00:00:00-03:00" -> "2026-05-01 00:00:00": Plotly has no time zones, the bucket is already local.
function wallClock(iso) { return iso.slice(0, 10) + " " + iso.slice(11, 19); }

function baseLayout(gran, yTitle) {
  const f = TIME_FORMATS[gran] || TIME_FORMATS.day;
  return {
    separators: ",.", margin: { l: 56, r: 12, t: 8, b: 48 }, height: 280, bargap: 0.12,
    font: { family: "system-ui, sans-serif", size: 13, color: "#1d2733" },
    xaxis: { type: "date", tickformat: f.tick, hoverformat: f.hover, gridcolor: "#eef1f4", automargin: true },
    yaxis: { title: { text: yTitle }, rangemode: "tozero", gridcolor: "#e3e8ee", tickformat: ",.3~f",
      automargin: true, fixedrange: false },
    legend: { orientation: "h", y: -0.25, font: { size: 12 } },
    hovermode: "closest", dragmode: "zoom", plot_bgcolor: "#fff", paper_bgcolor: "#fff",
  };
}

const CONFIG = { locale: "pt-BR", responsive: true, displaylogo: false, scrollZoom: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "toImage"] };

// A bucket is partial when the range shown does not cover it whole (a week cut by the dates, the current hour).
function isPartial(b, rangeStartMs, rangeEndMs, nowMs) {
  return b.start_ms < rangeStartMs || b.end_ms > rangeEndMs || b.end_ms > nowMs;
}

// Buckets without data are null (drawn as nothing): those still in the future, and those before the first
// measured energy of the range (the meter did not exist or did not report yet).
function measuredValues(buckets, nowMs) {
  const first = buckets.findIndex((b) => b.kwh > 0);
  return buckets.map((b, i) => (b.start_ms >= nowMs || first < 0 || i < first ? null : b.kwh));
}

// The consumption chart: one bar per bucket in kWh; hourly views coloured by posto (`postos`: start_ms -> posto),
// estimated buckets (energy spread over a data gap) hatched, partial ones outlined and named in the tooltip.
async function consumptionChart(el, c, { gran, rangeStartMs, rangeEndMs, postos }) {
  const P = await withPlotly();
  const now = Date.now();
  const values = measuredValues(c.buckets, now);
  if (!values.some((v) => v !== null)) { P.purge(el); el.innerHTML = "<p class='note'>Sem medições no período.</p>"; return; }
  if (!el._fullLayout) el.innerHTML = "";  // a message stood here; a drawn chart is updated in place
  const groups = new Map();  // legend entry -> indexes
  c.buckets.forEach((b, i) => {
    const key = postos ? (postos.get(b.start_ms) || "Fora ponta") : "Consumo";
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(i);
  });
  const traces = [...groups.entries()].map(([key, idx]) => ({
    type: "bar", name: postos ? key : "Consumo (kWh)", x: idx.map((i) => wallClock(c.buckets[i].start)),
    y: idx.map((i) => values[i]),
    marker: {
      color: postos ? POSTO_COLOURS[key] : BAR,
      pattern: { shape: idx.map((i) => (c.buckets[i].estimated ? "/" : "")), fillmode: "overlay", size: 6 },
      line: { color: idx.map((i) => (isPartial(c.buckets[i], rangeStartMs, rangeEndMs, now) ? "#1d2733" : "rgba(0,0,0,0)")),
        width: 1.5 },
    },
    customdata: idx.map((i) => {
      const b = c.buckets[i], notes = [];
      if (b.estimated) notes.push("estimado: energia distribuída por uma lacuna");
      if (isPartial(b, rangeStartMs, rangeEndMs, now)) notes.push("período parcial");
      return notes.length ? "<br>" + notes.join("<br>") : "";
    }),
    hovertemplate: `%{x}<br><b>%{y:,.3f} kWh</b>${postos ? "<br>" + key : ""}%{customdata}<extra></extra>`,
  }));
  const layout = baseLayout(gran, "kWh");
  layout.barmode = "overlay";
  layout.showlegend = Boolean(postos);
  await P.react(el, traces, layout, CONFIG);
}

// Side-by-side kWh per meter or group (`series`: [{name, buckets}]) for the same buckets, stacked.
async function breakdownChart(el, series, { gran }) {
  const P = await withPlotly();
  const now = Date.now();
  if (!series.length) { P.purge(el); el.innerHTML = "<p class='note'>Nenhum medidor ou grupo neste local.</p>"; return; }
  if (!el._fullLayout) el.innerHTML = "";  // a message stood here; a drawn chart is updated in place
  const traces = series.map((s, k) => ({
    type: "bar", name: s.name, x: s.buckets.map((b) => wallClock(b.start)), y: measuredValues(s.buckets, now),
    marker: { color: SERIES_COLOURS[k % SERIES_COLOURS.length] },
    hovertemplate: `${escapeHtml(s.name)}<br>%{x}<br><b>%{y:,.3f} kWh</b><extra></extra>`,
  }));
  const layout = baseLayout(gran, "kWh");
  layout.barmode = "stack";
  layout.showlegend = true;
  await P.react(el, traces, layout, CONFIG);
}

// Daily forecast bars with the interval as error bars.
async function forecastChart(el, days, label) {
  const P = await withPlotly();
  if (!el._fullLayout) el.innerHTML = "";  // a message stood here; a drawn chart is updated in place
  const trace = {
    type: "bar", name: label, x: days.map((d) => d.date), y: days.map((d) => d.kwh), marker: { color: "#9bbfe0" },
    error_y: { type: "data", symmetric: false, array: days.map((d) => d.high - d.kwh),
      arrayminus: days.map((d) => d.kwh - d.low), color: "#1d2733", thickness: 1.2 },
    hovertemplate: "%{x}<br><b>%{y:,.1f} kWh</b> (%{customdata})<extra></extra>",
    customdata: days.map((d) => `${num(d.low, 1)}–${num(d.high, 1)}`),
  };
  const layout = baseLayout("day", "kWh por dia");
  layout.height = 230;
  layout.showlegend = false;
  await P.react(el, [trace], layout, CONFIG);
}

function clearChart(el, message = "") {
  if (window.Plotly) Plotly.purge(el);
  el.innerHTML = message ? `<p class='note'>${escapeHtml(message)}</p>` : "";
}
