// The "at a glance" strip at the top of the dashboard, refreshing itself by polling: power now per site and
// meter, meters and gateways online (/api/v1/painel/agora, every few seconds), today's and the cycle's kWh and R$
// with the change against the same stretch before, and the projected bill of the cycle
// (/api/v1/painel/resumo, every minute). Polling stops while the tab is hidden and after logout.
// Power is signed: at a site that generates (solar), a negative number is power injected into the grid, shown
// as "injetando" rather than as a negative consumption.
"use strict";

const LIVE_EVERY_MS = 5000, SUMMARY_EVERY_MS = 60000;
const watts = new Intl.NumberFormat("pt-BR", { maximumFractionDigits: 0 });
const timeOnly = new Intl.DateTimeFormat("pt-BR", { timeStyle: "medium", timeZone: TZ });
const glance = { site: null, timers: [] };

// 93 s -> "há 1 min"; a moment from the API (ms) as an age the user reads at a glance.
function ago(ms) {
  if (ms == null) return "nunca";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `há ${s} s`;
  if (s < 3600) return `há ${Math.floor(s / 60)} min`;
  if (s < 172800) return `há ${Math.floor(s / 3600)} h`;
  return `há ${Math.floor(s / 86400)} dias`;
}

function changeText(pct, what) {
  if (pct == null) return `Sem dados de ${what} para comparar.`;
  const arrow = pct > 0 ? "▲" : pct < 0 ? "▼" : "=";
  return `${arrow} ${num(Math.abs(pct), 1)} % ${pct > 0 ? "acima" : pct < 0 ? "abaixo" : "igual"} de ${what}.`;
}

// "1.234 W" for power taken from the grid; "injetando 812 W" for power sent to it (negative, solar).
function power(w, generating) {
  if (w == null) return "sem leitura";
  if (w < 0) return `injetando ${watts.format(-w)} W`;
  return generating ? `consumindo ${watts.format(w)} W da rede` : `${watts.format(w)} W`;
}

function renderNow(n) {
  const site = n.sites.find((s) => s.site === glance.site());
  const gen = site && site.com_geracao;
  $("potencia-total").textContent = site ? power(site.potencia_w, gen) : "sem leitura";
  $("potencia-total").classList.toggle("export", !!site && site.potencia_w != null && site.potencia_w < 0);
  $("potencia-medidores").innerHTML = site ? site.medidores.map((m) => `<li><span>${escapeHtml(m.nome)}</span>`
    + `<b class="${m.potencia_w < 0 ? "export" : ""}">${power(m.potencia_w, m.com_injecao)}</b></li>`).join("") : "";
  $("potencia-nota").textContent = site
    ? `Atualizado às ${timeOnly.format(new Date(n.agora_ms))}` + (site.medidores_sem_leitura
      ? ` · ${site.medidores_sem_leitura} medidor(es) sem leitura no último minuto (fora da soma).` : ".")
      + (gen ? " Com geração própria: o total é o saldo com a rede (negativo = injetando)." : "")
    : "Nenhum medidor deste local comunicou ainda.";
  if (site) setNames(site.medidores);
  const meters = site ? site.medidores : [];
  const gws = n.gateways.filter((g) => g.site === glance.site());
  $("online-medidores").textContent = `Medidores online: ${meters.filter((m) => m.online).length} de ${meters.length}`;
  $("online-gateways").textContent = `Gateways online: ${gws.filter((g) => g.online).length} de ${gws.length}`;
  const offline = [...meters.filter((m) => !m.online).map((m) => `${m.nome} visto ${ago(m.visto_em_ms)}`),
    ...gws.filter((g) => !g.online).map((g) => `gateway ${g.gateway} visto ${ago(g.visto_em_ms)}`)];
  const newest = Math.max(...meters.map((m) => m.visto_em_ms || 0), 0);
  $("online-nota").textContent = offline.length ? `Fora do ar: ${offline.join("; ")}.`
    : newest ? `Última comunicação ${ago(newest)}.` : "";
}

function clearSummary(message) {
  for (const id of ["hoje-kwh", "hoje-rs", "ciclo-kwh", "ciclo-rs", "projecao-rs", "projecao-intervalo"]) $(id).textContent = "–";
  $("hoje-variacao").textContent = ""; $("ciclo-variacao").textContent = ""; $("hoje-injecao").hidden = true;
  $("projecao-nota").textContent = message;
}

function renderSummary(r) {
  $("hoje-kwh").textContent = `${num(r.hoje.kwh, 2)} kWh`;
  $("hoje-rs").textContent = r.hoje.rs != null ? `${brl.format(Number(r.hoje.rs))} em energia` : "sem tarifa";
  $("hoje-variacao").textContent = changeText(r.hoje.variacao_pct, "ontem até este horário");
  $("hoje-injecao").hidden = r.injecao_hoje_kwh == null;
  $("hoje-injecao").textContent = r.injecao_hoje_kwh != null ? `Injetado na rede: ${num(r.injecao_hoje_kwh, 2)} kWh` : "";
  $("ciclo-kwh").textContent = `${num(r.ciclo.kwh, 2)} kWh`;
  $("ciclo-rs").textContent = (r.ciclo.rs != null ? `${brl.format(Number(r.ciclo.rs))} em energia` : "sem tarifa")
    + ` · dia ${r.ciclo_dias_decorridos} de ${r.ciclo_dias} (${localDate(r.ciclo_inicio)} – ${localDate(r.ciclo_fim)})`;
  $("ciclo-variacao").textContent = r.ciclo_dias_decorridos > 1
    ? changeText(r.ciclo.variacao_pct, "os mesmos dias do ciclo anterior (dias completos)")
    : "Primeiro dia do ciclo: ainda sem dias completos para comparar.";
  const pj = r.projecao;
  if (!pj) {
    $("projecao-rs").textContent = "–"; $("projecao-intervalo").textContent = "";
    $("projecao-nota").textContent = r.nota_projecao;
    return;
  }
  $("projecao-rs").textContent = brl.format(Number(pj.rs));
  $("projecao-intervalo").textContent = `entre ${brl.format(Number(pj.rs_min))} e ${brl.format(Number(pj.rs_max))} `
    + `(${pj.intervalo}) · ${num(pj.kwh, 0)} kWh (${num(pj.kwh_min, 0)}–${num(pj.kwh_max, 0)})`;
  const notes = [pj.usa_linha_de_base
    ? `Projeção pela linha de base, ${pj.metodo}: o perfil semanal não a superou no backtest.`
    : `Projeção: ${pj.metodo}, ${num(pj.skill * 100, 0)} % melhor que o sazonal ingênuo no backtest.`];
  if (pj.inclui_custo_disponibilidade) notes.push("Inclui o custo de disponibilidade (mínimo faturável).");
  notes.push("Energia com tributos e bandeira; sem iluminação pública (COSIP).");
  $("projecao-nota").textContent = notes.join(" ");
}

async function pollNow() {
  try { renderNow(await api("painel/agora", { site: glance.site() })); } catch (e) {
    if (e instanceof SessionExpired) return;
    $("potencia-total").textContent = "–"; $("potencia-medidores").innerHTML = "";
    show($("potencia-nota"), e);
  }
}

async function pollSummary() {
  try { renderSummary(await api("painel/resumo", { site: glance.site() })); } catch (e) {
    if (!(e instanceof SessionExpired)) clearSummary(e.message);
  }
}

function schedule() {
  glance.timers.forEach(clearInterval);
  glance.timers = [];
  if (document.hidden || !token()) return;
  pollNow(); pollSummary();
  glance.timers = [setInterval(pollNow, LIVE_EVERY_MS), setInterval(pollSummary, SUMMARY_EVERY_MS)];
}

function startGlance(currentSite) { glance.site = currentSite; schedule(); }

function restartGlance() { if (glance.site) { clearSummary(""); schedule(); } }

function stopGlance() { glance.timers.forEach(clearInterval); glance.timers = []; glance.site = null; }

document.addEventListener("visibilitychange", () => { if (glance.site) schedule(); });
