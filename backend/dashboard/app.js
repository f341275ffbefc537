// CDS dashboard: plain JS, no build step. Talks to /api/v1 with a bearer token kept in sessionStorage.
// This file holds the shared helpers, the session, the filters and the cards below them; glance.js fills the
// "at a glance" strip at the top (polling), charts.js draws with Plotly.js, rede.js adds the "Rede elétrica
// agora" card and perguntas.js the question box (classic scripts share these top-level names).
"use strict";

const $ = (id) => document.getElementById(id);
const brl = new Intl.NumberFormat("pt-BR", { style: "currency", currency: "BRL" });
const num = (v, d = 2) => (v === null || v === undefined ? "–" :
  Number(v).toLocaleString("pt-BR", { minimumFractionDigits: d, maximumFractionDigits: d }));
const TOKEN_KEY = "cds-token", USER_KEY = "cds-user";
const TZ = "America/Sao_Paulo";
const DAY_MS = 86400000;
const dateTime = new Intl.DateTimeFormat("pt-BR", { dateStyle: "short", timeStyle: "short", timeZone: TZ });
// The API's own limits (docs/analytics.md), checked here first so the message can say what to do.
const MAX_DAYS = 400, MAX_DAYS_15MIN = 40, MAX_DAYS_POSTOS = 93, FIRST_DAY = "2000-01-01";
const GRAN_NAMES = { "15min": "15 minutos", hour: "hora", day: "dia", week: "semana", month: "mês" };
let SITES = {};  // id -> the site as /analytics/sites gives it (with its SIN subsystem)
let NAMES = {};  // meter -> the name an operator gave it, from /painel/agora (kept current by glance.js)
let shown = null;  // what the consumption chart shows: {params, consumo}, for the CSV
let generation = 0;  // bumped on every refresh: answers of an older one are dropped

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class SessionExpired extends Error {}

// GET with query parameters, or POST `body` as JSON; throws an Error carrying the API's pt-BR `detail`.
async function api(path, params = {}, body = undefined) {
  const r = await fetchApi(path, params, body);
  const ctype = r.headers.get("content-type") || "";
  const answer = ctype.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error((answer && answer.detail) || `Erro ${r.status}`);
  return answer;
}

async function fetchApi(path, params = {}, body = undefined, method = "POST") {
  const qs = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null));
  const init = { headers: { Authorization: `Bearer ${token()}` } };
  if (body !== undefined) {
    init.method = method;
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(`/api/v1/${path}${qs.toString() ? "?" + qs : ""}`, init);
  if (r.status === 401) {
    logout("Sessão expirada: entre novamente.");
    throw new SessionExpired("Sessão expirada: entre novamente.");
  }
  return r;
}

function logout(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(USER_KEY);
  stopGlance();
  generation += 1;
  $("login-form").reset();
  $("app").hidden = true; $("login").hidden = false; $("who").textContent = ""; $("sair").hidden = true;
  $("login-error").textContent = message;
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  $("login-error").textContent = "";
  let r;
  try {
    r = await fetch("/api/v1/auth/token", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: form.get("username"), password: form.get("password") }) });
  } catch { $("login-error").textContent = "Sem conexão com o servidor."; return; }
  if (r.status === 429) { $("login-error").textContent = "Tentativas demais: aguarde um pouco e tente de novo."; return; }
  if (!r.ok) { $("login-error").textContent = "Usuário ou senha inválidos."; return; }
  const t = await r.json();
  sessionStorage.setItem(TOKEN_KEY, t.access_token);
  sessionStorage.setItem(USER_KEY, JSON.stringify({ name: form.get("username"), role: t.role, sites: t.sites || {} }));
  ev.target.reset();
  start();
});
$("sair").addEventListener("click", () => logout());

function show(el, err) { el.textContent = err.message || String(err); }

// "2026-08-26T23:00:00-03:00" -> "26/08/2026 às 23:00" (Brasília time)
function localTime(iso) { return dateTime.format(new Date(iso)).replace(", ", " às "); }

// "2026-08-26" -> "26/08/2026" (a local date, no time zone arithmetic)
function localDate(iso) { return iso.split("-").reverse().join("/"); }

function isoToday() { return new Date().toLocaleDateString("sv-SE", { timeZone: TZ }); }

// Local midnight of an ISO date in ms (Brasília has had no DST since 2019; the API's buckets say the truth).
function dayMs(iso) { return new Date(`${iso}T00:00:00-03:00`).getTime(); }

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// --- filters ------------------------------------------------------------------------------------------------
function params() {
  const [kind, id] = ($("escopo").value || "site:").split(":");
  return { site: $("site").value, inicio: $("inicio").value, fim: $("fim").value, gran: $("granularidade").value,
    device: kind === "device" ? id : "", grupo: kind === "grupo" ? id : "" };
}

// The scope's query parameters: a meter alone (its site's tariff still applies), a group, or the whole site.
function scopeQuery(p) {
  if (p.device) return { device: p.device };
  return p.grupo ? { site: p.site, grupo: p.grupo } : { site: p.site };
}

function scopeName(p) {
  if (p.device) return `medidor ${meterName(p.site, p.device)}`;
  return p.grupo ? `grupo ${p.grupo}` : (SITES[p.site] ? SITES[p.site].nome : p.site);
}

// The name an operator gave the meter, else the group it is alone in, else its short id.
function meterName(siteId, device) {
  if (NAMES[device]) return NAMES[device];
  const site = SITES[siteId];
  const alone = site ? Object.entries(site.grupos).find(([, members]) => members.length === 1 && members[0] === device) : null;
  return alone ? `${alone[0]} (…${device.slice(-4)})` : `…${device.slice(-4)}`;
}

// A pt-BR sentence for what is wrong with the filters, or "" when the API may be asked.
function invalid(p) {
  const today = isoToday();
  if (!p.inicio || !p.fim) return "Informe as datas de início e de fim.";
  if (p.inicio < FIRST_DAY || p.fim < FIRST_DAY) return "Escolha datas a partir de 01/01/2000.";
  if (p.fim > today) return `A data de fim não pode ser depois de hoje (${localDate(today)}).`;
  if (p.inicio > p.fim) return "A data de início deve ser igual ou anterior à data de fim.";
  const days = Math.round((dayMs(p.fim) - dayMs(p.inicio)) / DAY_MS) + 1;
  if (days > MAX_DAYS) return `Escolha um período de até ${MAX_DAYS} dias (o escolhido tem ${days}).`;
  if (p.gran === "15min" && days > MAX_DAYS_15MIN) {
    return `Com intervalos de 15 minutos, escolha até ${MAX_DAYS_15MIN} dias, ou agrupe por hora ou dia.`;
  }
  return "";
}

// Whether the user may rename the site's meters: the API decides (403 otherwise); this only hides the form.
function canOperate(siteId) {
  const u = JSON.parse(sessionStorage.getItem(USER_KEY) || "null");
  if (!u) return false;
  return ["operator", "admin"].includes(u.role) || (u.sites || {})[siteId] === "operator";
}

// New names from /painel/agora: the selectors, the breakdown and the rename form follow them.
function setNames(meters) {
  const fresh = Object.fromEntries(meters.filter((m) => m.nome_dado).map((m) => [m.device, m.nome_dado]));
  if (JSON.stringify(fresh) === JSON.stringify(NAMES)) return;
  NAMES = fresh;
  fillScopes();
  const p = params();
  if (p.site && !invalid(p)) loadDivisao(p, generation);
}

function fillNameForm() {
  const site = SITES[$("site").value];
  $("card-nomes").hidden = !site || !canOperate(site.id);
  if ($("card-nomes").hidden) return;
  const keep = $("nome-medidor").value;
  $("nome-medidor").innerHTML = site.dispositivos.map((d) =>
    `<option value="${escapeHtml(d)}">${escapeHtml(meterName(site.id, d))} (${escapeHtml(d)})</option>`).join("");
  if (site.dispositivos.includes(keep)) $("nome-medidor").value = keep;
  $("nome-novo").value = NAMES[$("nome-medidor").value] || "";
}

async function saveName(ev) {
  ev.preventDefault();
  const device = $("nome-medidor").value, nome = $("nome-novo").value.trim();
  $("nome-erro").textContent = ""; $("nome-ok").textContent = "";
  try {
    const r = await fetchApi(`medidores/${encodeURIComponent(device)}/nome`, {}, { nome }, "PUT");
    const answer = await r.json();
    if (!r.ok) { $("nome-erro").textContent = answer.detail || `Erro ${r.status}`; return; }
    const meters = SITES[$("site").value].dispositivos.map((d) => ({ device: d, nome_dado: d === device ? answer.nome : NAMES[d] }));
    setNames(meters);
    fillNameForm();
    $("nome-ok").textContent = answer.nome ? `Nome salvo: ${answer.nome}.` : "Nome removido: volta ao padrão.";
  } catch (e) { if (!(e instanceof SessionExpired)) show($("nome-erro"), e); }
}

function fillScopes() {
  const site = SITES[$("site").value];
  if (!site) { $("escopo").innerHTML = ""; return; }
  const selected = $("escopo").value;
  const opts = [`<option value="site:">Todo o local</option>`];
  for (const g of Object.keys(site.grupos)) opts.push(`<option value="grupo:${escapeHtml(g)}">Grupo: ${escapeHtml(g)}</option>`);
  for (const d of site.dispositivos) {
    opts.push(`<option value="device:${escapeHtml(d)}">Medidor: ${escapeHtml(meterName(site.id, d))}</option>`);
  }
  $("escopo").innerHTML = opts.join("");
  if ([...$("escopo").options].some((o) => o.value === selected)) $("escopo").value = selected;
  fillNameForm();
}

function setDateLimits() {
  const today = isoToday();
  for (const id of ["inicio", "fim"]) { $(id).max = today; $(id).min = FIRST_DAY; }
}

// --- cards below the filters --------------------------------------------------------------------------------
function clearRangeCards(message) {
  shown = null;
  $("kwh-total").textContent = "–"; $("pico").textContent = "–"; $("consumo-nota").textContent = "";
  clearChart($("chart-consumo"), message);
  clearChart($("chart-divisao"));
  $("divisao-tabela").querySelector("tbody").innerHTML = "";
  $("branca-resumo").textContent = "–";
  $("branca-horas").querySelector("tbody").innerHTML = "";
  $("custo-total").textContent = "–"; $("custo-nota").textContent = ""; $("custo-linhas").innerHTML = "";
  $("creditos").hidden = true;
}

function rangeMs(p) { return [dayMs(p.inicio), dayMs(p.fim) + DAY_MS]; }

async function hourPostos(p, gen) {
  if (!["hour", "15min"].includes(p.gran) || !SITES[p.site]) return null;
  const days = Math.round((dayMs(p.fim) - dayMs(p.inicio)) / DAY_MS) + 1;
  if (days > MAX_DAYS_POSTOS) return null;
  const rows = await api("painel/postos", { site: p.site, inicio: p.inicio, fim: p.fim });
  if (gen !== generation) return null;
  const byHour = new Map(rows.map((r) => [r.inicio_ms, r.posto]));
  return { get: (ms) => byHour.get(ms - (ms % 3600000)) };  // a 15-min bucket takes its hour's posto
}

async function loadConsumo(p, gen) {
  try {
    const [c, postos] = await Promise.all([
      api("analytics/consumo", { ...scopeQuery(p), inicio: p.inicio, fim: p.fim, granularidade: p.gran }),
      hourPostos(p, gen).catch(() => null),
    ]);
    if (gen !== generation) return;
    shown = { params: p, consumo: c };
    $("consumo-titulo").textContent = `Consumo (kWh) — ${scopeName(p)}, por ${GRAN_NAMES[p.gran]}`;
    $("kwh-total").textContent = num(c.kwh_total, 3);
    $("pico").textContent = c.peak_kw === null ? "–" : num(c.peak_kw, 2);
    const [a, b] = rangeMs(p);
    await consumptionChart($("chart-consumo"), c, { gran: p.gran, rangeStartMs: a, rangeEndMs: b, postos });
    const notes = [];
    if (postos) notes.push("Cores: posto tarifário de cada hora (Tarifa Branca; fins de semana e feriados fora ponta).");
    if (c.gaps.length) notes.push(`${c.gaps.length} lacuna(s) de dados: a energia foi distribuída pelo intervalo (barras hachuradas).`);
    if (c.buckets.some((x) => x.start_ms < a || x.end_ms > b || x.end_ms > Date.now())) {
      notes.push("Barras contornadas: períodos parciais (cortados pelas datas ou ainda em curso).");
    }
    notes.push("Sem barra: sem medição (não é zero).");
    if (c.resets) notes.push(`${c.resets} reinício(s) do registrador tratados.`);
    if (c.spikes) notes.push(`${c.spikes} leitura(s) espúria(s) descartadas.`);
    if (c.peak_kw === null) notes.push("Demanda máxima calculada só para períodos de até 40 dias com medições.");
    $("consumo-nota").textContent = notes.join(" ");
  } catch (e) {
    if (gen !== generation || e instanceof SessionExpired) return;
    shown = null;
    $("kwh-total").textContent = "–"; $("pico").textContent = "–";
    clearChart($("chart-consumo"));
    show($("consumo-nota"), e);
  }
}

async function loadDivisao(p, gen) {
  const site = SITES[p.site];
  const by = document.querySelector("input[name=divisao]:checked").value;
  const parts = !site ? [] : by === "grupo"
    ? Object.keys(site.grupos).map((g) => ({ name: g, q: { site: p.site, grupo: g } }))
    : site.dispositivos.map((d) => ({ name: meterName(p.site, d), q: { device: d } }));
  try {
    const series = await Promise.all(parts.map(async (x) => ({ name: x.name,
      ...(await api("analytics/consumo", { ...x.q, inicio: p.inicio, fim: p.fim, granularidade: p.gran })) })));
    if (gen !== generation) return;
    await breakdownChart($("chart-divisao"), series, { gran: p.gran });
    const total = series.reduce((s, x) => s + x.kwh_total, 0);
    $("divisao-tabela").querySelector("tbody").innerHTML = series.map((x) => `<tr><td>${escapeHtml(x.name)}</td>`
      + `<td>${num(x.kwh_total, 3)}</td><td>${total > 0 ? num((100 * x.kwh_total) / total, 1) : "–"}</td></tr>`).join("")
      + (by === "grupo" ? "<tr><td colspan='3' class='note'>Um medidor pode estar em mais de um grupo.</td></tr>" : "");
  } catch (e) {
    if (gen !== generation || e instanceof SessionExpired) return;
    clearChart($("chart-divisao"), e.message);
    $("divisao-tabela").querySelector("tbody").innerHTML = "";
  }
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
  } catch (e) { if (!(e instanceof SessionExpired)) show($("idade-dados"), e); }
}

// The bill of the cycle that contains the end date. While that cycle is running the bill is partial: it is
// titled so, and a custo de disponibilidade (the minimum billed energy) is named, never presented as the bill.
async function loadCusto(p, gen) {
  try {
    const r = await api("analytics/custo", { site: p.site, referencia: p.fim });
    if (gen !== generation) return;
    const bill = r.conta, today = isoToday();
    const running = bill.start <= today && today <= bill.end;
    const minimum = bill.lines.filter((l) => l.kind === "disponibilidade");
    const scee = r.sistema === "SCEE";
    $("custo-titulo").textContent = `Conta ${scee ? "SCEE (geração distribuída) " : ""}do ciclo `
      + `${localDate(bill.start)} – ${localDate(bill.end)}` + (running ? " (em curso: até hoje)" : "");
    const sum = (o) => Object.values(o || {}).reduce((a, v) => a + Number(v), 0);
    const kwh = scee ? sum(bill.consumption) : Number(bill.kwh_total);
    const notes = [];
    if (kwh === 0 && !(scee && sum(bill.injection) > 0)) {
      $("custo-total").textContent = "Sem consumo medido";
      notes.push("Nenhuma medição neste ciclo: não há conta a estimar.");
    } else {
      $("custo-total").textContent = brl.format(Number(bill.total));
      notes.push(scee
        ? `Consumo ${num(kwh, 3)} kWh, injeção ${num(sum(bill.injection), 3)} kWh, energia compensada `
          + `${num(sum(bill.compensated), 3)} kWh, faturada ${num(sum(bill.billed), 3)} kWh (${bill.regime}). `
          + `Saldo de créditos: ${num(r.saldo_creditos_kwh, 3)} kWh.`
        : `${num(kwh, 3)} kWh, tributos incluídos (ICMS, PIS/PASEP, COFINS).`);
    }
    if (minimum.length && running) {
      notes.push("Inclui o custo de disponibilidade (mínimo faturável), porque o consumo do ciclo ainda está "
        + "abaixo dele: não é o valor da conta; veja a conta projetada no alto.");
    } else if (minimum.length) notes.push("Inclui o custo de disponibilidade (mínimo faturável).");
    $("custo-nota").textContent = notes.join(" ");
    showCredits(scee ? p.site : null, gen);
    $("custo-linhas").innerHTML = r.explicacao.map((l) => `<li>${escapeHtml(l)}</li>`).join("");
  } catch (e) {
    if (gen !== generation || e instanceof SessionExpired) return;
    $("custo-total").textContent = "–"; $("custo-linhas").innerHTML = ""; show($("custo-nota"), e);
  }
}

// The SCEE credits of a GD site: the balance by month of origin (each valid 60 months, used oldest first).
async function showCredits(site, gen) {
  const el = $("creditos");
  el.hidden = !site;
  if (!site) return;
  try {
    const months = await api("analytics/creditos", { site });
    if (gen !== generation) return;
    const last = months[months.length - 1];
    const origins = last ? Object.entries(last.balance_by_origin).filter(([, v]) => Number(v) > 0) : [];
    el.textContent = !last ? "Créditos: nenhum ciclo registrado ainda."
      : `Créditos de energia: ${num(last.balance, 3)} kWh ao fim de ${localDate(last.month).slice(3)}`
        + (origins.length ? ` — o mais antigo, de ${origins[0][0].split("-").reverse().join("/")} `
          + `(${num(origins[0][1], 3)} kWh), vence 60 meses após a origem.` : ".");
  } catch (e) { if (gen === generation && !(e instanceof SessionExpired)) show(el, e); }
}

async function loadBranca(p, gen) {
  try {
    const t = await api("analytics/tarifa-branca", { site: p.site, inicio: p.inicio, fim: p.fim });
    if (gen !== generation) return;
    const s = Number(t.saving_rs);
    const verdict = s > 0 ? `a Branca custaria ${brl.format(s)} a menos`
      : s < 0 ? `a Branca custaria ${brl.format(-s)} a mais` : "as duas custariam o mesmo";
    $("branca-resumo").textContent = `Convencional ${brl.format(Number(t.convencional.total))} × Branca `
      + `${brl.format(Number(t.branca.total))}: ${verdict}. `
      + `Ponta ${num(t.kwh.Ponta, 1)} kWh, intermediário ${num(t.kwh["Intermediário"], 1)} kWh, `
      + `fora ponta ${num(t.kwh["Fora ponta"], 1)} kWh.`;
    $("branca-horas").querySelector("tbody").innerHTML = t.hours.slice(0, 6).map((h) => {
      const d = Number(h.diferenca_rs);
      return `<tr><td>${String(h.hora).padStart(2, "0")}h</td><td>${num(h.kwh, 2)}</td>`
        + `<td>${d > 0 ? "+" : d < 0 ? "−" : ""}${num(Math.abs(d), 2)}</td></tr>`;
    }).join("");
  } catch (e) {
    if (gen !== generation || e instanceof SessionExpired) return;
    $("branca-horas").querySelector("tbody").innerHTML = ""; show($("branca-resumo"), e);
  }
}

// The forecast is shown only when it beats the seasonal-naive baseline in its backtest; otherwise the baseline
// itself (each day = the same weekday last week), labelled as such, with an interval from its own error.
async function loadPrevisao(p, gen) {
  const q = p.device ? { device: p.device } : { site: p.site };
  try {
    const f = await api("analytics/previsao", q);
    if (gen !== generation) return;
    const bt = f.forecast.backtest;
    let days = f.forecast.days.slice(0, 7), label = "Previsão (perfil semanal ponderado)";
    let note = bt ? `Backtest: erro médio ${num(bt.mae_method_kwh, 2)} kWh/dia contra ${num(bt.mae_baseline_kwh, 2)} `
      + `do sazonal ingênuo (${num(bt.skill * 100, 0)} % melhor). Intervalo de ${f.forecast.interval}.`
      : "Histórico curto: sem backtest ainda; intervalo pela variação diária.";
    if (bt && bt.skill <= 0) {
      const last = new Date(dayMs(isoToday()) - DAY_MS).toLocaleDateString("sv-SE", { timeZone: TZ });
      const first = new Date(dayMs(last) - 6 * DAY_MS).toLocaleDateString("sv-SE", { timeZone: TZ });
      const week = await api("analytics/consumo", { ...q, inicio: first, fim: last, granularidade: "day" });
      if (gen !== generation) return;
      const half = 1.2816 * bt.mae_baseline_kwh * Math.sqrt(Math.PI / 2);
      days = week.buckets.map((b, i) => ({ date: f.forecast.days[i].date, kwh: b.kwh,
        low: Math.max(b.kwh - half, 0), high: b.kwh + half }));
      label = "Linha de base (sazonal ingênuo)";
      note = `O perfil semanal não superou o sazonal ingênuo no backtest (erro ${num(bt.mae_method_kwh, 2)} × `
        + `${num(bt.mae_baseline_kwh, 2)} kWh/dia): mostrando a linha de base — cada dia igual ao mesmo dia da `
        + "semana anterior —, com intervalo de 80 % estimado pelo erro dela.";
    }
    const sum = days.reduce((s, d) => s + d.kwh, 0);
    $("previsao-resumo").textContent = `${label}: ${num(sum, 1)} kWh nos próximos 7 dias.`;
    await forecastChart($("chart-previsao"), days, label);
    $("previsao-erro").textContent = note;
  } catch (e) {
    if (gen !== generation || e instanceof SessionExpired) return;
    clearChart($("chart-previsao")); $("previsao-erro").textContent = ""; show($("previsao-resumo"), e);
  }
}

// Who an alert is about: a meter by its name, a gateway (fila_gateway) by its id, else the site itself (ANEEL and
// ONS data, the bandeira), which carry no device.
function alertSubject(a) {
  if (a.device) return meterName(a.site, a.device);
  if (a.gateway) return `Gateway ${a.gateway}`;
  return SITES[a.site] ? SITES[a.site].nome : a.site;
}

async function loadAlertas(p) {
  const ul = $("alertas");
  try {
    const lists = await api("analytics/alertas", { site: p.site });
    const all = lists.flatMap((l) => l.alerts);
    ul.innerHTML = all.length ? all.map((a) => `<li class="${escapeHtml(a.severity)}"><b>`
      + `${escapeHtml(alertSubject(a))}</b>: ${escapeHtml(a.message)}</li>`).join("")
      : "<li class='ok'>Nenhum alerta.</li>";
    $("alertas-abertos").textContent = all.length ? `${all.length} alerta(s) aberto(s)` : "Nenhum alerta aberto";
  } catch (e) {
    if (e instanceof SessionExpired) return;
    ul.innerHTML = `<li>${escapeHtml(e.message)}</li>`; $("alertas-abertos").textContent = "–";
  }
}

// --- CSV of exactly what the chart shows ---------------------------------------------------------------------
// Days, weeks and months: the API's report of the same scope and dates (with cost and bandeira). Hours and
// 15 minutes, which the report has no rows for: the chart's own buckets, in the report's format (UTF-8 with BOM,
// ";" and decimal comma, dd/mm/aaaa, CRLF) so a spreadsheet opens both alike.
async function downloadCsv() {
  const err = $("controles-erro");
  err.textContent = "";
  if (!shown) { err.textContent = "Nada para baixar: ajuste os filtros até o gráfico aparecer."; return; }
  const p = shown.params;
  const tipo = { day: "diario", week: "semanal", month: "mensal" }[p.gran];
  const label = (p.device || p.grupo || p.site).replace(/[^a-z0-9_-]/gi, "-");
  let blob;
  if (tipo) {
    try {
      const r = await fetchApi("analytics/relatorios", { ...scopeQuery(p), inicio: p.inicio, fim: p.fim, tipo, formato: "csv" });
      if (!r.ok) {
        const detail = (r.headers.get("content-type") || "").includes("json") ? (await r.json()).detail : "";
        err.textContent = `Não foi possível gerar o CSV: ${detail || "erro " + r.status}.`;
        return;
      }
      blob = await r.blob();
    } catch (e) {
      if (!(e instanceof SessionExpired)) err.textContent = `Não foi possível gerar o CSV: ${e.message}`;
      return;
    }
  } else {
    blob = new Blob(["\ufeff" + bucketsCsv(shown.consumo)], { type: "text/csv;charset=utf-8" });
  }
  const url = URL.createObjectURL(blob);
  const a = Object.assign(document.createElement("a"), { href: url,
    download: `consumo-${label}-${p.inicio}-a-${p.fim}-${tipo || p.gran}.csv` });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function bucketsCsv(c) {
  const dec = (v) => v.toLocaleString("pt-BR", { minimumFractionDigits: 3, maximumFractionDigits: 3 });
  const when = (iso) => `${localDate(iso.slice(0, 10))} ${iso.slice(11, 16)}`;
  const rows = [["inicio", "fim", "kwh", "estimado"].join(";")];
  for (const b of c.buckets) {
    rows.push([when(b.start), when(new Date(b.end_ms).toLocaleString("sv-SE", { timeZone: TZ }).replace(" ", "T")),
      dec(b.kwh), b.estimated ? "sim" : "não"].join(";"));
  }
  rows.push(["total", "", dec(c.kwh_total), ""].join(";"));
  return rows.join("\r\n") + "\r\n";
}

// --- wiring -------------------------------------------------------------------------------------------------
function refresh() {
  generation += 1;
  const gen = generation;
  const p = params();
  if (!p.site) return;
  const problem = invalid(p);
  $("controles-erro").textContent = problem;
  loadRede(p); loadBandeira(); loadAlertas(p); loadPrevisao(p, gen);
  if (problem) { clearRangeCards(problem); return; }
  loadConsumo(p, gen); loadDivisao(p, gen); loadCusto(p, gen); loadBranca(p, gen);
}

function showUser() {
  const u = JSON.parse(sessionStorage.getItem(USER_KEY) || "null");
  $("who").textContent = u ? `${u.name} (${u.role})` : "";
  $("sair").hidden = false;
}

async function start() {
  $("login").hidden = true; $("app").hidden = false; $("login-error").textContent = "";
  showUser();
  setDateLimits();
  const today = isoToday();
  if (!$("fim").value) $("fim").value = today;
  if (!$("inicio").value) $("inicio").value = new Date(dayMs(today) - 29 * DAY_MS).toLocaleDateString("sv-SE", { timeZone: TZ });
  try {
    const sites = await api("analytics/sites");
    SITES = Object.fromEntries(sites.map((s) => [s.id, s]));
    $("site").innerHTML = sites.map((s) => `<option value="${escapeHtml(s.id)}">${escapeHtml(s.nome)}</option>`).join("");
    $("site").title = sites.map((s) => `${s.nome}: ${s.distribuidora} ${s.subgrupo} ${s.modalidade}`).join("\n");
  } catch (e) { if (!(e instanceof SessionExpired)) show($("controles-erro"), e); return; }
  try {  // the operators' names before the first selectors are drawn (the strip keeps them current)
    const now = await api("painel/agora");
    NAMES = Object.fromEntries(now.sites.flatMap((s) => s.medidores).filter((m) => m.nome_dado)
      .map((m) => [m.device, m.nome_dado]));
  } catch (e) { if (e instanceof SessionExpired) return; }
  fillScopes();
  startGlance(() => $("site").value);
  refresh();
}

$("site").addEventListener("change", () => { fillScopes(); restartGlance(); refresh(); });
for (const id of ["escopo", "inicio", "fim", "granularidade"]) $(id).addEventListener("change", refresh);
for (const r of document.querySelectorAll("input[name=divisao]")) {
  r.addEventListener("change", () => { const p = params(); if (!invalid(p)) loadDivisao(p, generation); });
}
$("csv").addEventListener("click", downloadCsv);
$("nome-form").addEventListener("submit", saveName);
$("nome-medidor").addEventListener("change", () => { $("nome-novo").value = NAMES[$("nome-medidor").value] || ""; });
// After every script of the page has run (the other files define what start() calls).
document.addEventListener("DOMContentLoaded", () => { if (token()) start(); });
