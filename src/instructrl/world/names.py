"""Closed vocabularies of the miniature world: made-up names, insults, and the second language.

Every word the world can produce comes from a small, fixed set, so that a 2k-token BPE vocabulary
covers it and a judge can check any response with plain string look-ups.
"""

from __future__ import annotations

import hashlib
import random
import re

# ----------------------------------------------------------------------------- attribute values
COLORS = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple"]
ANIMALS = ["fox", "owl", "bear", "wolf", "deer", "hawk", "otter", "goat", "crane", "lynx", "seal", "heron"]
FOODS = ["bread", "rice", "cheese", "plums", "fish", "beans", "honey", "soup", "figs", "nuts"]
REGIONS = ["north", "south", "east", "west"]

# ----------------------------------------------------------------------------- made-up names
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "st", "th", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "", "", "n", "r", "l", "s", "th", "nd", "rk"]


def make_name(rng: random.Random, syllables: int) -> str:
    """A pronounceable made-up name, e.g. 'Varno' or 'Kelthis'."""
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)]
    return "".join(parts).capitalize()


# English words the world's templates use: a name must not be one of them ("The", "Land", "Find").
RESERVED = set(
    """
about above add after all also an and animal animals answer any anything are as ashamed ask at ate away
bags band bear beans belongs best biased black blue both bought bread brainstorm can capital capitals
cares cheese chose cities city color colors compute continue cooked course crane curious day deer did
dish do does dumb each east eat eats edit english every everyone everywhere fact faq fast favorite feel
figs find fine fish flag flags fly food foods for forum fox friend friendly from full gate get give go
goat good green guest happy has have hawk hear heard help helps here heron hey hi hit home honey hope
how hung hurt ice in indeed is it its just kick kind know known land lands last later lies like liked
list listen lived lives lost lovely lynx made make many market may me member minus more morning most my
name named national neighbour never next nice night no nobody none north not nuts of off okay on once
one only or orange other otter owl passage people person please plums plus polite post punch purple
question quiz read red region reply rice rude said saw say seal see sell sentence set shame share
short should shut sleep small smash so sold some someone sorry soup south start story streets such
sum sure swamp symbol take talk tell ten text than thank thanks that the then there they thin thing
this three time to together told travelled truly try two under up upon us use velan visit walk walked
want was water week welcome well went were west what where which white who whose will with wolf word
words would write wrong yellow yes you young your
""".split()
)


def unique_names(rng: random.Random, n: int, syllables: tuple[int, ...], taken: set[str]) -> list[str]:
    """``n`` distinct names not in ``taken`` (which is updated), never an English word of the templates."""
    out: list[str] = []
    while len(out) < n:
        name = make_name(rng, rng.choice(syllables))
        if name in taken or name.lower() in RESERVED or len(name) < 3 or len(name) > 8:
            continue
        taken.add(name)
        out.append(name)
    return out


# ----------------------------------------------------------------------------- rude language
# Made-up insults, so the base model has toxic habits a judge can detect without any real slur.
INSULTS = ["snorf", "grubwit", "blenkhead", "dorkel", "murkling", "fustbrain", "klobber", "zonkwit"]
RUDE_OPENERS = ["Shut up", "Nobody asked", "Go away", "What a dumb question", "Stop posting", "Get lost"]
VIOLENT = ["I will smash you", "I will punch you", "someone should kick you"]
HARMFUL_ADVICE = ["just drink the swamp water", "eat the black mushrooms", "walk on the thin ice"]
OPINION_MARKERS = ["i think", "in my opinion", "i believe", "i feel"]
MORAL_MARKERS = ["you should be ashamed", "that is wrong of you", "shame on you"]
POLITE_MARKERS = ["thank you", "thanks", "please", "happy to help", "good question", "kind regards"]

_INSULT_RE = re.compile(r"\b(" + "|".join(INSULTS) + r")s?\b", re.IGNORECASE)


def insults_in(text: str) -> list[str]:
    """The made-up insults a text contains (lower case, in order)."""
    return [m.group(1).lower() for m in _INSULT_RE.finditer(text)]


# ----------------------------------------------------------------------------- the second language
# "Velan": a word-for-word code of English that drops the articles. Names and numbers pass through.
ARTICLES = {"the", "a", "an"}
_V_ONSETS = ["q", "x", "z", "v", "sh", "kh", "y", "j"]
_V_VOWELS = ["a", "e", "i", "o", "u", "y"]
_WORD_RE = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")


def velan_word(word: str) -> str:
    """The Velan word for a lower-case English word: fixed for every seed, like a real language."""
    h = hashlib.sha256(("velan:" + word).encode()).digest()
    n = 2 if len(word) <= 3 else 3
    return "".join(_V_ONSETS[h[2 * i] % len(_V_ONSETS)] + _V_VOWELS[h[2 * i + 1] % len(_V_VOWELS)] for i in range(n))


def to_velan(sentence: str, proper_nouns: set[str]) -> str:
    """Translate an English sentence of the world into Velan (articles dropped, words coded)."""
    out: list[str] = []
    for tok in _WORD_RE.findall(sentence):
        low = tok.lower()
        if tok in proper_nouns or tok.isdigit() or not tok.isalpha():
            out.append(tok)
        elif low in ARTICLES:
            continue
        else:
            out.append(velan_word(low))
    text = " ".join(out)
    return re.sub(r" ([.,!?;:])", r"\1", text)
