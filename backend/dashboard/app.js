// CDS dashboard: plain JS, no build step. Talks to /api/v1 with a bearer token kept in sessionStorage.
// This file holds the shared helpers, the login and the consumption/bill cards; rede.js adds the "Rede elétrica
// agora" card and perguntas.js the question box (classic scripts share these top-level names).
"use strict";

const $ = (id) => document.getElementById(id);
const brl = new Intl.NumberFormat("pt-BR", { style: "currency", currency: "BRL" });
const num = (v, d = 2) => (v === null || v === undefined ? "–" :
  Number(v).toLocaleString("pt-BR", { minimumFractionDigits: d, maximumFractionDigits: d }));
const TOKEN_KEY = "cds-token";
const TZ = "America/Sao_Paulo";
const dateTime = new Intl.DateTimeFormat("pt-BR", { dateStyle: "short", timeStyle: "short", timeZone: TZ });
let SITES = {};  // id -> the site as /analytics/sites gives it (with its SIN subsystem)

function token() { return sessionStorage.getItem(TOKEN_KEY); }

// GET with query parameters, or POST `body` as JSON; throws an Error carrying the API's pt-BR `detail`.
async function api(path, params = {}, body = undefined) {
  const qs = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null));
  const init = { headers: { Authorization: `Bearer ${token()}` } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(`/api/v1/${path}${qs.toString() ? "?" + qs : ""}`, init);
  if (r.status === 401) { logout(); throw new Error("Sessão expirada: entre novamente."); }
  const ctype = r.headers.get("content-type") || "";
  const answer = ctype.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error((answer && answer.detail) || `Erro ${r.status}`);
  return answer;
}

function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  $("app").hidden = true; $("login").hidden = false; $("who").textContent = "";
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const r = await fetch("/api/v1/auth/token", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: form.get("username"), password: form.get("password") }) });
  if (!r.ok) { $("login-error").textContent = "Usuário ou senha inválidos."; return; }
  const t = await r.json();
  sessionStorage.setItem(TOKEN_KEY, t.access_token);
  $("who").textContent = `${form.get("username")} (${t.role})`;
  start();
});
$("sair").addEventListener("click", logout);

// --- small inline SVG bar chart (optional interval whiskers) ------------------------------------------------
function barChart(el, items, { label, value, low, high, estimated } = {}) {
  const W = 600, H = 220, P = 28;
  if (!items.length) { el.innerHTML = "<p class='note'>Sem dados no período.</p>"; return; }
  const max = Math.max(...items.map((x) => (high ? high(x) : value(x))), 0.001);
  const bw = (W - P) / items.length;
  const y = (v) => H - 18 - (v / max) * (H - 30);
  let svg = `<svg viewBox="0 0 ${W} ${H}" role="img">`;
  svg += `<text x="0" y="10">${num(max, 1)}</text><text x="0" y="${H - 20}">0</text>`;
  const every = Math.ceil(items.length / 12);
  items.forEach((x, i) => {
    const v = value(x), x0 = P + i * bw;
    const cls = estimated && estimated(x) ? "bar est" : "bar";
    svg += `<rect class="${cls}" x="${x0 + 1}" y="${y(v)}" width="${Math.max(bw - 2, 1)}" height="${H - 18 - y(v)}">`
      + `<title>${label(x)}: ${num(v, 3)} kWh</title></rect>`;
    if (low && high) {
      const cx = x0 + bw / 2;
      svg += `<line class="band" x1="${cx}" x2="${cx}" y1="${y(high(x))}" y2="${y(low(x))}"/>`;
    }
    if (i % every === 0) svg += `<text x="${x0}" y="${H - 4}">${label(x)}</text>`;
  });
  el.innerHTML = svg + "</svg>";
}

function shortLabel(iso, gran) {
  const d = new Date(iso);
  if (gran === "hour") return d.toLocaleTimeString("pt-BR", { hour: "2-digit", timeZone: "America/Sao_Paulo" });
  if (gran === "month") return d.toLocaleDateString("pt-BR", { month: "short", year: "2-digit", timeZone: "America/Sao_Paulo" });
  return d.toLocaleDateString("pt-BR", { day: "2-digit", month: "2-digit", timeZone: "America/Sao_Paulo" });
}

function show(el, err) { el.textContent = err.message || String(err); }

// "2026-08-26T23:00:00-03:00" -> "26/08/2026 às 23:00" (Brasília time)
function localTime(iso) { return dateTime.format(new Date(iso)).replace(", ", " às "); }

// "2026-08-26" -> "26/08/2026" (a local date, no time zone arithmetic)
function localDate(iso) { return iso.split("-").reverse().join("/"); }

function isoToday() { return new Date().toLocaleDateString("sv-SE", { timeZone: TZ }); }

// --- sections -----------------------------------------------------------------------------------------------
async function loadConsumo(p) {
  try {
    const gran = $("granularidade").value;
    const c = await api("analytics/consumo", { site: p.site, inicio: p.inicio, fim: p.fim, granularidade: gran });
    $("kwh-total").textContent = num(c.kwh_total, 2);
    $("pico").textContent = c.peak_kw === null ? "–" : num(c.peak_kw, 2);
    barChart($("chart-consumo"), c.buckets, { label: (b) => shortLabel(b.start, gran), value: (b) => b.kwh,
      estimated: (b) => b.estimated });
    const notes = [];
    if (c.gaps.length) notes.push(`${c.gaps.length} lacuna(s) de dados: energia distribuída (barras claras).`);
    if (c.resets) notes.push(`${c.resets} reinício(s) do registrador tratados.`);
    if (c.spikes) notes.push(`${c.spikes} leitura(s) espúria(s) descartadas.`);
    $("consumo-nota").textContent = notes.join(" ");
  } catch (e) { show($("consumo-nota"), e); }
}

async function loadBandeira() {
  try {
    const b = await api("aneel/bandeiras", {});
    const el = $("bandeira");
    if (b.atual) {
      el.textContent = `${b.atual.bandeira} — R$ ${num(Number(b.atual.adicional_rs_mwh) / 10, 3)} a cada 100 kWh`
        + (b.atual.fonte === "estimada" ? " (estimada: ainda não publicada)" : "");
      el.className = "flag " + b.atual.bandeira.split(" ")[0];
    }
    const s = b.idade_dos_dados.sync;
    $("idade-dados").textContent = s && s.last_ok_at
      ? `Dados da ANEEL sincronizados há ${Math.round(s.age_s / 3600)} h${b.idade_dos_dados.stale ? " (desatualizados)" : ""}.`
      : "Dados da ANEEL ainda não sincronizados.";
  } catch (e) { show($("idade-dados"), e); }
}

async function loadCusto(p) {
  try {
    const r = await api("analytics/custo", { site: p.site, referencia: p.fim });
    $("custo-total").textContent = brl.format(Number(r.conta.total));
    $("custo-linhas").innerHTML = r.explicacao.map((l) => `<li>${escapeHtml(l)}</li>`).join("");
  } catch (e) { $("custo-total").textContent = "–"; $("custo-linhas").innerHTML = `<li>${escapeHtml(e.message)}</li>`; }
}

async function loadBranca(p) {
  try {
    const t = await api("analytics/tarifa-branca", { site: p.site, inicio: p.inicio, fim: p.fim });
    const s = Number(t.saving_rs);
    $("branca-resumo").textContent = `Convencional ${brl.format(Number(t.convencional.total))} × Branca `
      + `${brl.format(Number(t.branca.total))}: ${s > 0 ? "economia de " + brl.format(s) : "custaria " + brl.format(-s) + " a mais"}. `
      + `Ponta ${num(t.kwh.Ponta, 1)} kWh, intermediário ${num(t.kwh["Intermediário"], 1)} kWh, `
      + `fora ponta ${num(t.kwh["Fora ponta"], 1)} kWh.`;
    $("branca-horas").querySelector("tbody").innerHTML = t.hours.slice(0, 6).map((h) =>
      `<tr><td>${String(h.hora).padStart(2, "0")}h</td><td>${num(h.kwh, 2)}</td><td>${num(h.diferenca_rs, 2)}</td></tr>`).join("");
  } catch (e) { show($("branca-resumo"), e); }
}

async function loadPrevisao(p) {
  try {
    const f = await api("analytics/previsao", { site: p.site });
    const n7 = f.forecast.next_7_days, rm = f.forecast.rest_of_month;
    let txt = `Próximos 7 dias: ${num(n7.kwh, 1)} kWh (${num(n7.low, 1)}–${num(n7.high, 1)}). `
      + `Restante do mês: ${num(rm.kwh, 1)} kWh.`;
    if (f.next_7_days_cost_rs) txt += ` Custo estimado em 7 dias: ${brl.format(Number(f.next_7_days_cost_rs[0]))}.`;
    $("previsao-resumo").textContent = txt;
    barChart($("chart-previsao"), f.forecast.days.slice(0, 7), { label: (d) => d.date.slice(8, 10) + "/" + d.date.slice(5, 7),
      value: (d) => d.kwh, low: (d) => d.low, high: (d) => d.high });
    const bt = f.forecast.backtest;
    $("previsao-erro").textContent = bt
      ? `Erro médio no backtest: ${num(bt.mae_method_kwh, 2)} kWh/dia (sazonal ingênuo: ${num(bt.mae_baseline_kwh, 2)}; `
        + `ganho ${num(bt.skill * 100, 0)} %). Intervalo de ${f.forecast.interval}.`
      : "Histórico curto: sem backtest ainda.";
  } catch (e) { show($("previsao-resumo"), e); }
}

async function loadAlertas(p) {
  const ul = $("alertas");
  try {
    const lists = await api("analytics/alertas", { site: p.site });
    const all = lists.flatMap((l) => l.alerts);
    ul.innerHTML = all.length ? all.map((a) => `<li class="${a.severity}"><b>${escapeHtml(a.device)}</b>: `
      + `${escapeHtml(a.message)}</li>`).join("") : "<li class='ok'>Nenhum alerta.</li>";
  } catch (e) { ul.innerHTML = `<li>${escapeHtml(e.message)}</li>`; }
}

async function downloadCsv() {
  const p = params();
  const tipo = { hour: "diario", day: "diario", week: "semanal", month: "mensal" }[$("granularidade").value];
  const qs = new URLSearchParams({ site: p.site, inicio: p.inicio, fim: p.fim, tipo, formato: "csv" });
  const r = await fetch(`/api/v1/analytics/relatorios?${qs}`, { headers: { Authorization: `Bearer ${token()}` } });
  if (!r.ok) { alert("Não foi possível gerar o relatório."); return; }
  const url = URL.createObjectURL(await r.blob());
  const a = Object.assign(document.createElement("a"), { href: url, download: `relatorio-${p.site}-${tipo}.csv` });
  a.click(); URL.revokeObjectURL(url);
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function params() { return { site: $("site").value, inicio: $("inicio").value, fim: $("fim").value }; }

function refresh() {
  const p = params();
  if (!p.site) return;
  loadConsumo(p); loadRede(p); loadBandeira(); loadCusto(p); loadBranca(p); loadPrevisao(p); loadAlertas(p);
}

async function start() {
  $("login").hidden = true; $("app").hidden = false;
  const today = new Date();
  const iso = (d) => d.toLocaleDateString("sv-SE", { timeZone: TZ });
  if (!$("fim").value) $("fim").value = iso(today);
  if (!$("inicio").value) $("inicio").value = iso(new Date(today.getTime() - 29 * 86400000));
  try {
    const sites = await api("analytics/sites");
    SITES = Object.fromEntries(sites.map((s) => [s.id, s]));
    $("site").innerHTML = sites.map((s) => `<option value="${escapeHtml(s.id)}">${escapeHtml(s.nome)} — `
      + `${escapeHtml(s.distribuidora)} ${escapeHtml(s.subgrupo)} ${escapeHtml(s.modalidade)}`
      + `${s.subsistema ? " · subsistema " + escapeHtml(s.subsistema) : ""}</option>`).join("");
  } catch (e) { alert(e.message); return; }
  refresh();
}

$("atualizar").addEventListener("click", refresh);
$("csv").addEventListener("click", downloadCsv);
// After every script of the page has run (rede.js and perguntas.js define what refresh() calls).
document.addEventListener("DOMContentLoaded", () => { if (token()) start(); });
