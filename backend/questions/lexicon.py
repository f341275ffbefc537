"""The words the parser knows, one home for each list (all lower case, without accents).

Three kinds of word matter to the parser: *cues* (they point at an intent or a slot; listed next to their
rules in :mod:`backend.questions.parser` and :mod:`backend.questions.periods`), *neutral* words (articles,
pronouns, fillers, polite forms, generic verbs — they carry no meaning for us but are not suspicious either), and
everything else. A word of the third kind left over after parsing may name something CDS does not know ("a
geladeira", "o mercado", "um carro"), so the parser does not answer confidently over it. Adding a word here is
how a new harmless filler is taught.
"""

from __future__ import annotations

from typing import Final

from backend.questions.interpretation import Subsistema


def words(text: str) -> list[str]:
    """Whitespace-separated words of a block of text (the lists below are written as prose blocks)."""
    return text.split()

ABBREVIATIONS: Final = {
    "qto": "quanto", "qnto": "quanto", "qt": "quanto", "qnt": "quanto", "qtos": "quantos", "qts": "quantos",
    "qtas": "quantas", "qnts": "quantos", "q": "que", "pq": "por que", "porque": "por que", "pra": "para",
    "pro": "para o", "pros": "para os", "vc": "voce", "vcs": "voces", "hj": "hoje", "tb": "tambem",
    "tbm": "tambem", "mto": "muito", "mt": "muito", "eh": "e", "ta": "esta", "to": "estou", "tao": "tao",
    "td": "tudo", "msm": "mesmo", "oq": "o que", "oque": "o que", "kw/h": "kwh", "kwhs": "kwh", "kw.h": "kwh",
    "prox": "proximo", "ult": "ultimo", "vlr": "valor", "obg": "obrigado", "blz": "beleza", "n": "nao",
    "amanha": "amanha", "agr": "agora", "dps": "depois", "sla": "sei la", "tava": "estava", "tô": "estou",
    "rs": "reais", "r$": "reais", "%": "porcento",
}
"""Chat abbreviations and colloquial contractions -> full words (applied to whole tokens)."""

NUMBER_WORDS: Final = {
    "um": 1, "uma": 1, "dois": 2, "duas": 2, "tres": 3, "quatro": 4, "cinco": 5, "seis": 6, "sete": 7,
    "oito": 8, "nove": 9, "dez": 10, "onze": 11, "doze": 12, "treze": 13, "quatorze": 14, "catorze": 14,
    "quinze": 15, "vinte": 20, "trinta": 30, "sessenta": 60, "noventa": 90,
}
"""Spelled-out counts, turned into digits before a time unit ("nos últimos sete dias")."""

MONTHS: Final = ("janeiro", "fevereiro", "marco", "abril", "maio", "junho", "julho", "agosto", "setembro",
                 "outubro", "novembro", "dezembro")
WEEKDAYS: Final = ("segunda", "terca", "quarta", "quinta", "sexta", "sabado", "domingo")

STATES: Final[dict[str, Subsistema]] = {
    # Sudeste/Centro-Oeste (Acre and Rondônia are interconnected through it)
    "sao paulo": "SE", "rio de janeiro": "SE", "minas gerais": "SE", "minas": "SE", "espirito santo": "SE",
    "goias": "SE", "distrito federal": "SE", "brasilia": "SE", "mato grosso do sul": "SE", "mato grosso": "SE",
    "acre": "SE", "rondonia": "SE",
    "parana": "S", "santa catarina": "S", "rio grande do sul": "S",
    "bahia": "NE", "sergipe": "NE", "alagoas": "NE", "pernambuco": "NE", "paraiba": "NE",
    "rio grande do norte": "NE", "ceara": "NE", "piaui": "NE",
    "tocantins": "N", "maranhao": "N", "amazonas": "N", "amapa": "N", "roraima": "N",
}
"""Brazilian states -> the ONS subsystem that serves (most of) them, so "na Bahia" means the Nordeste."""

NEUTRAL: Final = frozenset(words("""
a agora ai ainda algo algum alguma algumas alguns ali alta altas alto altos ao aos apartamento apenas apos
aproximadamente aquela aquele aqui aquilo as ate ativa ativas ativo ativos atual atualmente baixa baixo bem boa
bom cada cade cara casa cerca certeza certo checar cheque com como confere conferir confira consegue conseguiria
consulta consultar consulte contra da dado dados dar das de dela delas dele deles desde deseja desejo deu
deveria devia devo dia diga disse diz dizer do dos e ela elas ele eles eletrica eletricidade em energia entao
entre era essa essas esse esses esta estao estaria estas estava este estes esteve estive estiver estou eu
exatamente fala falar fale favor faz fazendo fazer feito fez fica ficando ficar ficaria ficou foi foram fosse
fui geral gostaria grande ha haver havia hein hoje houve imovel imposto impostos indo informa informacao
informacoes informar informe instalacao instalacoes ir isso isto ja la lar lhe lhes lista listar liste local
lugar luz maior mais mal mano mas me melhor menor menos mesma mesmo meu meus mim minha minhas momento mostra
mostrando mostrar mostre mudanca mudar mudasse muita muitas muito muitos na nao nas ne nenhum nenhuma no noite
normais normal nos nossa nossas nosso nossos num numa numero numeros nunca o obrigada obrigado oi ola onde os ou
outra outras outro outros para pela pelas pelo pelos pequeno periodo pior pode poderia podes podia pois por
pouca pouco precisava preciso predio quais qual quando quanta quantas quantidade quanto quantos que quem queria
quero residencia sabe saber sai sair saiu sao se sei sem sempre sendo ser sera seria seu seus sim so sob sobre
somente sou sua suas talvez tambem tanta tanto tao tarde tarifarias te tem temos tenho ter teu teve ti tinha
tipo tive tiveram toda todas todo todos totais total tributo tributos troca trocar trocasse tua tudo ultimamente
um uma umas uns vai vale valendo valor valores vamos veio veja vejo vem ver vez vezes vieram vigente vigor vindo
voce voces vou à medio media ok okay beleza dando
"""))
"""Words that carry no meaning for us but are fine to meet in a question."""
