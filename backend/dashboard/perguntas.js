// The question box: posts the question (and the selected site) to /api/v1/perguntas and shows the answer's
// sentence, its numbers with their units, warnings and sources, and — collapsed — how the question was understood
// and the API call that gives the same numbers. Errors of the request show the API's pt-BR `detail`.
"use strict";

const MAX_ROWS = 12;
const VALUE_NAMES = {
  consumo: "Consumo", total: "Total da conta", subtotal_sem_tributos: "Subtotal sem tributos", tributos: "Tributos",
  preco_kwh: "Preço do kWh", convencional: "Convencional", branca: "Tarifa Branca",
  economia_com_branca: "Economia com a Branca", consumo_previsto: "Consumo previsto", custo_previsto: "Custo previsto",
  adicional_bandeira: "Adicional da bandeira", demanda_maxima: "Demanda máxima", alertas: "Alertas",
  medidores: "Medidores", sem_comunicacao: "Sem comunicação", custo_estimado: "Custo estimado",
  hidraulica: "Geração hidráulica", termica: "Geração térmica", eolica: "Geração eólica", solar: "Geração solar",
  geracao_total: "Geração total", carga: "Carga", intercambio: "Intercâmbio (+ exporta, − importa)",
  renovavel_pct: "Participação renovável", cmo: "CMO", media: "CMO médio", minimo: "CMO mínimo", maximo: "CMO máximo",
  participacao_renovavel_pct: "Parcela renovável do seu consumo", kwh_renovavel: "kWh renováveis",
  kwh_com_dados_da_rede: "kWh com dados da rede", kwh_total: "kWh no período",
  participacao_media_da_rede_pct: "Média renovável do subsistema",
};
const INTENTS = {
  consumo: "consumo", custo: "custo / conta", previsao: "previsão", tarifa_branca: "Tarifa Branca",
  bandeira: "bandeira tarifária", demanda: "demanda máxima", alertas: "alertas", medidores: "medidores",
  relatorio: "relatório", geracao: "geração (ONS)", carga: "carga (ONS)", cmo: "custo marginal de operação (ONS)",
  renovavel: "participação renovável (ONS)", conhecimento: "explicação (base de conhecimento)",
  desconhecido: "não entendida",
};
const GRANULARITIES = { "15min": "15 minutos", hour: "hora", day: "dia", week: "semana", month: "mês" };
const SUBSYSTEM_NAMES = { SE: "Sudeste/Centro-Oeste", S: "Sul", NE: "Nordeste", N: "Norte",
  SIN: "Sistema Interligado Nacional" };

// A value's exact decimal text in the Brazilian way, with its unit: "R$ 1.234,56", "845.981 MWh", "45,2 %".
function formatValue(valor, unidade) {
  const x = Number(valor);
  if (unidade === "R$") return brl.format(x);
  if (unidade.startsWith("R$/")) {
    const digits = unidade === "R$/kWh" ? 6 : 2;
    return new Intl.NumberFormat("pt-BR", { style: "currency", currency: "BRL", minimumFractionDigits: 2,
      maximumFractionDigits: digits }).format(x) + unidade.slice(2);
  }
  const digits = unidade === "%" ? 1 : 3;
  return `${new Intl.NumberFormat("pt-BR", { maximumFractionDigits: digits }).format(x)} ${unidade}`;
}

function valuePeriod(v) {
  if (!v.inicio) return v.detalhe ? escapeHtml(v.detalhe) : "";
  const when = v.inicio.length > 10 ? localTime(v.inicio) : localDate(v.inicio);
  const until = v.fim ? ` a ${v.fim.length > 10 ? localTime(v.fim) : localDate(v.fim)}` : "";
  return escapeHtml(when + until + (v.detalhe ? ` · ${v.detalhe}` : ""));
}

function renderValues(valores) {
  const table = $("resposta-valores");
  table.hidden = valores.length === 0;
  table.querySelector("tbody").innerHTML = valores.slice(0, MAX_ROWS).map((v) =>
    `<tr><td>${escapeHtml(VALUE_NAMES[v.nome] || v.nome.replaceAll("_", " "))}</td>`
    + `<td>${escapeHtml(formatValue(v.valor, v.unidade))}</td><td>${valuePeriod(v)}</td></tr>`).join("");
  $("resposta-mais").textContent = valores.length > MAX_ROWS
    ? `… e mais ${valores.length - MAX_ROWS} valores (a consulta abaixo traz todos).` : "";
}

function renderUnderstanding(a) {
  const q = a.interpretacao;
  const scope = [q.escopo.site && `local ${q.escopo.site}`, q.escopo.grupo && `grupo ${q.escopo.grupo}`,
    q.escopo.device && `medidor ${q.escopo.device}`, q.escopo.usuario && "o seu consumo"].filter(Boolean);
  const fields = [
    ["Assunto", INTENTS[q.intencao] || q.intencao],
    ["Confiança", `${pct.format(100 * q.confianca)} %`],
    ["Escopo", scope.join(", ")],
    ["Período", q.periodo ? (q.periodo.inicio === q.periodo.fim ? localDate(q.periodo.inicio)
      : `${localDate(q.periodo.inicio)} a ${localDate(q.periodo.fim)}`)
      + (q.periodo.tipo === "agora" ? " (hora mais recente publicada)" : "") : ""],
    ["Agrupado por", q.granularidade ? GRANULARITIES[q.granularidade] : ""],
    ["Fonte de geração", q.fonte ? SOURCES[q.fonte] : ""],
    ["Subsistema", q.subsistema ? `${SUBSYSTEM_NAMES[q.subsistema]} (${q.subsistema})` : ""],
    ["Unidade", q.unidade || ""],
    ["Termo", q.termo || ""],
    ["Lida como", q.normalizada],
    ["Palavras não reconhecidas", q.palavras_desconhecidas.join(", ")],
    ["Consulta equivalente", a.consulta || ""],
  ].filter(([, value]) => value);
  $("resposta-campos").innerHTML = fields.map(([k, value]) => `<dt>${escapeHtml(k)}</dt><dd>`
    + (k === "Consulta equivalente" ? `<code>${escapeHtml(value)}</code>` : escapeHtml(value)) + "</dd>").join("");
}

function renderAnswer(a) {
  $("resposta").hidden = false;
  const text = $("resposta-texto");
  text.textContent = a.resposta;
  text.classList.toggle("unavailable", !a.disponivel);
  renderValues(a.valores);
  $("resposta-avisos").innerHTML = a.avisos.map((w) => `<li>${escapeHtml(w)}</li>`).join("");
  $("resposta-fontes").textContent = a.citacoes.length
    ? "Fontes: " + a.citacoes.map((c) => `${c.titulo} — ${c.fonte}`).join("; ") : "";
  renderUnderstanding(a);
}

$("pergunta-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const button = ev.target.querySelector("button");
  $("pergunta-erro").textContent = "";
  button.disabled = true;
  try {
    const body = { pergunta: $("pergunta").value };
    if ($("site").value) body.site = $("site").value;
    renderAnswer(await api("perguntas", {}, body));
  } catch (e) {
    $("resposta").hidden = true;
    show($("pergunta-erro"), e);
  } finally {
    button.disabled = false;
  }
});
