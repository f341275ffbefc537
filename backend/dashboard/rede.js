// "Rede elétrica agora": the generation mix of the selected site's SIN subsystem in the newest hour ONS has
// published (/api/v1/ons/agora), its renewable share and age, and how much of the site's kWh this month coincided
// with renewable generation there (/api/v1/analytics/renovavel). ONS publishes a day or two late, so the hour
// shown is never the current one: the card always says which hour it is and how old.
"use strict";

const SOURCES = { hidraulica: "Hidráulica", termica: "Térmica", eolica: "Eólica", solar: "Solar" };
const mw = new Intl.NumberFormat("pt-BR", { maximumFractionDigits: 0 });
const pct = new Intl.NumberFormat("pt-BR", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const kwh = new Intl.NumberFormat("pt-BR", { minimumFractionDigits: 1, maximumFractionDigits: 1 });

// 331200 s -> "3 dias e 20 h"
function ageText(seconds) {
  const h = Math.floor(seconds / 3600);
  if (h < 1) return "menos de 1 hora";
  if (h < 48) return `${h} h`;
  return `${Math.floor(h / 24)} dias e ${h % 24} h`;
}

function renderMix(sub) {
  const total = sub.geracao_total || 0;
  const rows = Object.entries(sub.geracao).sort((a, b) => b[1] - a[1]);
  $("rede-mix").innerHTML = rows.map(([source, value]) => {
    const share = total > 0 ? (100 * value) / total : 0;
    return `<li class="${escapeHtml(source)}"><span class="label">${escapeHtml(SOURCES[source] || source)}</span>`
      + `<span class="track"><span class="fill" style="width:${share.toFixed(1)}%"></span></span>`
      + `<span class="value">${mw.format(value)} MWmed · ${pct.format(share)} %</span></li>`;
  }).join("") + `<li class="total"><span class="label">Total</span><span class="track"></span>`
    + `<span class="value">${mw.format(total)} MWmed</span></li>`;
}

function renderAge(age, sub, fallback) {
  const notes = [`Hora de ${localTime(sub.hora)}, a mais recente publicada pelo ONS`
    + (age.idade_s != null ? ` (encerrada há ${ageText(age.idade_s)}; o ONS publica com um ou dois dias de atraso).`
      : ".")];
  if (fallback) notes.push(fallback);
  if (age.fonte === "memoria") notes.push("Banco de dados indisponível: última resposta calculada, em memória.");
  else if (age.desatualizado) {
    notes.push("Dados desatualizados" + (age.erro_ultima_tentativa
      ? `: a última sincronização com o ONS falhou (${age.erro_ultima_tentativa}).` : "."));
  }
  $("rede-idade").textContent = notes.join(" ");
  $("rede-idade").classList.toggle("stale", Boolean(age.desatualizado));
}

async function loadGridNow(site) {
  const code = site && site.subsistema ? site.subsistema : "SIN";
  try {
    const now = await api("ons/agora");
    const sub = now.subsistemas.find((s) => s.subsistema === code)
      || now.subsistemas.find((s) => s.subsistema === "SIN") || now.subsistemas[0];
    $("rede-subsistema").textContent = `${sub.nome} (${sub.subsistema})`;
    $("rede-renovavel").textContent = sub.renovavel_pct == null ? "–" : `${pct.format(sub.renovavel_pct)} %`;
    renderMix(sub);
    const fallback = !site || site.subsistema ? "" : "Subsistema do local desconhecido: mostrando o SIN "
      + "(defina 'subsystem' no arquivo de sites).";
    renderAge(now.idade_dos_dados, sub, fallback);
  } catch (e) {
    $("rede-subsistema").textContent = site && site.nome_subsistema ? site.nome_subsistema : "–";
    $("rede-renovavel").textContent = "–";
    $("rede-mix").innerHTML = "";
    show($("rede-idade"), e);
  }
}

async function loadMyShare(siteId) {
  const today = isoToday();
  const monthStart = today.slice(0, 8) + "01";
  try {
    const r = await api("analytics/renovavel", { site: siteId, inicio: monthStart, fim: today });
    if (r.participacao_renovavel_pct == null) {
      $("rede-meu").textContent = "–";
      $("rede-meu-nota").textContent = r.kwh_total > 0
        ? "Ainda não há dados do ONS para as horas do seu consumo deste mês."
        : "Nenhum consumo medido neste mês.";
      return;
    }
    $("rede-meu").textContent = `${pct.format(r.participacao_renovavel_pct)} %`;
    let note = `${kwh.format(r.kwh_renovavel)} de ${kwh.format(r.kwh_com_dados_da_rede)} kWh, hora a hora, `
      + `de ${localDate(r.inicio)} a ${localDate(r.fim)} (${r.nome_subsistema}).`;
    if (r.participacao_media_da_rede_pct != null) {
      note += ` Média do subsistema nas mesmas horas: ${pct.format(r.participacao_media_da_rede_pct)} %.`;
    }
    if (r.horas_sem_dados_da_rede) {
      note += ` ${r.horas_sem_dados_da_rede} h (${kwh.format(r.kwh_sem_dados_da_rede)} kWh) ainda sem dados do ONS.`;
    }
    $("rede-meu-nota").textContent = note + " Coincidência no tempo, não a origem física da energia.";
  } catch (e) {
    $("rede-meu").textContent = "–";
    show($("rede-meu-nota"), e);
  }
}

function loadRede(p) {
  loadGridNow(SITES[p.site]);
  loadMyShare(p.site);
}
