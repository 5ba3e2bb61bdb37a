"""A fictional company's internal documents and questions about them, for benchmarks.

    python -m opd_docs.synthetic --out DIR --seed 0

writes ``DIR/docs/*.md`` (overview, products, people, offices, policies, history) and
``DIR/qa.jsonl`` (one question per fact, with a short answer and aliases). Every name is made
of random syllables and every number, date and code is drawn at random, so no pretrained model
can know the answers; the same seed always writes the same files. More than half the facts are
stated twice, in different documents and words, as internal documentation tends to do.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "kr", "l", "m", "n", "p", "pr", "r", "s",
           "st", "t", "tr", "v", "z", "th", "sh", "qu")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "io", "ou", "y")
_CODAS = ("", "", "n", "r", "l", "x", "s", "th", "m", "nd", "rk")
_FIRST_NAMES = ("Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farah", "Goran", "Hana", "Ines",
                "Jonas", "Kiri", "Luca", "Mina", "Nils", "Oona", "Pavel", "Rosa", "Soren",
                "Tamsin", "Ugo", "Vera", "Wen", "Yusuf", "Zora")  # fmt: skip
_COMPANY_KINDS = ("Systems", "Labs", "Industries", "Dynamics", "Works")
_PRODUCT_KINDS = ("sensor hub", "billing platform", "routing engine", "data vault",
                  "field tablet", "scheduling service", "telemetry gateway", "design suite",
                  "payment terminal", "inventory robot")  # fmt: skip
_ROLES = ("Chief Technology Officer", "Chief Financial Officer", "Head of Security",
          "Head of People", "Vice President of Sales", "Director of Support",
          "Head of Legal", "Chief Operating Officer", "Director of Research",
          "Head of Procurement", "Facilities Manager", "Head of Design")  # fmt: skip
_COLORS = ("teal", "amber", "violet", "crimson", "ochre", "silver", "indigo", "coral")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip


@dataclass(frozen=True)
class QA:
    """One question, its short answer and other accepted forms of it."""

    question: str
    answer: str
    aliases: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Person:
    name: str
    role: str
    office: str
    extension: str

    @property
    def surname(self) -> str:
        return self.name.split()[-1]


@dataclass(frozen=True)
class Product:
    name: str
    kind: str
    code: str
    launched: date
    price: int
    codename: str
    lead: Person


@dataclass(frozen=True)
class Office:
    city: str
    site_code: str
    opened: int
    floors: int


def long_date(day: date) -> str:
    """``March 3, 2019``."""
    return f"{_MONTHS[day.month - 1]} {day.day}, {day.year}"


def date_aliases(day: date) -> list[str]:
    return [day.isoformat(), f"{day.day} {_MONTHS[day.month - 1]} {day.year}"]


def money(amount: int) -> str:
    """``$1,250``."""
    return f"${amount:,}"


class _Inventor:
    """Draws made-up words and numbers, never the same word twice."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int) -> str:
        while True:
            parts = [
                self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
                for _ in range(syllables)
            ]
            word = "".join(parts).capitalize()
            if word not in self.used and 5 <= len(word) <= 11:
                self.used.add(word)
                return word

    def code(self, letters: int, digits: int) -> str:
        while True:
            head = "".join(self.rng.choice("BCDFGHJKLMNPQRSTVWXZ") for _ in range(letters))
            value = f"{head}-{self.rng.randrange(10 ** (digits - 1), 10**digits)}"
            if value not in self.used:
                self.used.add(value)
                return value

    def number(self, low: int, high: int) -> int:
        """A number in ``[low, high]`` not drawn before (so that answers stay unambiguous)."""
        while True:
            value = self.rng.randint(low, high)
            if str(value) not in self.used:
                self.used.add(str(value))
                return value

    def day(self, first_year: int, last_year: int) -> date:
        start = date(first_year, 1, 1)
        return start + timedelta(days=self.rng.randrange((date(last_year, 12, 31) - start).days))


@dataclass
class Company:
    """Every fact of one fictional company, drawn from a seed."""

    name: str
    hq: str
    founded: int
    founder: Person
    ceo: Person
    employees: int
    offices: list[Office]
    people: list[Person]
    products: list[Product]
    policies: dict[str, int | str]

    @staticmethod
    def invent(seed: int, num_products: int = 8, num_people: int = 12) -> Company:
        rng = random.Random(seed)
        inv = _Inventor(rng)
        name = f"{inv.word(3)} {rng.choice(_COMPANY_KINDS)}"
        founded = inv.number(1979, 2012)
        offices = [
            Office(inv.word(2), inv.code(2, 3), inv.number(founded + 1, 2024), rng.randint(2, 40))
            for _ in range(3)
        ]
        hq = offices[0].city

        def person(role: str) -> Person:
            office = offices[rng.randrange(len(offices))].city
            extension = str(inv.number(1000, 9999))
            return Person(f"{rng.choice(_FIRST_NAMES)} {inv.word(2)}", role, office, extension)

        founder = person("Founder and Chief Scientist")
        ceo = person("Chief Executive Officer")
        roles = rng.sample(_ROLES, len(_ROLES))
        people = [person(roles[i % len(roles)]) for i in range(num_people)]
        products = [
            Product(
                name=inv.word(3),
                kind=rng.choice(_PRODUCT_KINDS),
                code=inv.code(2, 4),
                launched=inv.day(founded + 1, 2024),
                price=inv.number(12, 980) * 25,
                codename=inv.word(2),
                lead=people[i % len(people)],
            )
            for i in range(num_products)
        ]
        policies: dict[str, int | str] = {
            "vacation_days": inv.number(18, 39),
            "remote_days": rng.randint(1, 4),
            "expense_limit": inv.number(11, 199) * 25,
            "laptop_months": inv.number(40, 60),
            "badge_color": rng.choice(_COLORS),
            "password_days": inv.number(61, 179),
            "parental_weeks": inv.number(19, 30),
            "wifi": f"{inv.word(2)}-Net",
            "hotline": str(inv.number(1000, 9999)),
            "onboarding_course": inv.code(3, 3),
        }
        return Company(
            name, hq, founded, founder, ceo, inv.number(210, 9800), offices, people, products,
            policies,
        )  # fmt: skip

    # ------------------------------------------------------------------ documents

    def documents(self) -> dict[str, str]:
        """File name -> Markdown text."""
        return {
            "overview.md": self._overview(),
            "products.md": self._products(),
            "people.md": self._people(),
            "offices.md": self._offices(),
            "policies.md": self._policies(),
            "history.md": self._history(),
        }

    def _overview(self) -> str:
        return "\n\n".join(
            [
                f"# {self.name}: company overview",
                f"{self.name} was founded in {self.founded} by {self.founder.name} and is "
                f"headquartered in {self.hq}. It employs {self.employees:,} people across "
                f"{len(self.offices)} offices.",
                f"The company is led by {self.ceo.name}, its Chief Executive Officer. "
                f"{self.founder.name} remains with the company as Founder and Chief Scientist.",
                f"{self.name} builds {len(self.products)} products, from the "
                f"{self.products[0].name} {self.products[0].kind} to the "
                f"{self.products[-1].name} {self.products[-1].kind}. See products.md.",
            ]
        )

    def _products(self) -> str:
        sections = [f"# {self.name} product catalogue"]
        for p in self.products:
            sections.append(
                f"## {p.name}\n\n"
                f"{p.name} is our {p.kind}. Its product code is {p.code} and it was launched on "
                f"{long_date(p.launched)}. The list price is {money(p.price)}. During "
                f"development it was known by the internal codename {p.codename}. "
                f"The lead engineer for {p.name} is {p.lead.name}."
            )
        return "\n\n".join(sections)

    def _people(self) -> str:
        table = ["Name | Role | Office | Extension"] + [
            f"{p.name} | {p.role} | {p.office} | {p.extension}"
            for p in (self.founder, self.ceo, *self.people)
        ]
        notes = [
            f"{p.name} ({p.role}) can be reached on extension {p.extension} "
            f"and works from the {p.office} office."
            for p in self.people
        ]
        return "\n\n".join([f"# {self.name} staff directory", "\n".join(table), *notes])

    def _offices(self) -> str:
        sections = [f"# {self.name} offices"]
        for index, office in enumerate(self.offices):
            what = "the headquarters" if index == 0 else "a regional office"
            sections.append(
                f"## {office.city}\n\n{office.city} is {what}, site code {office.site_code}. It "
                f"opened in {office.opened} and has {office.floors} floors."
            )
        return "\n\n".join(sections)

    def _policies(self) -> str:
        p = self.policies
        return "\n\n".join(
            [
                f"# {self.name} employee handbook",
                f"## Leave\n\nEvery employee gets {p['vacation_days']} vacation days per year. "
                f"Parental leave is {p['parental_weeks']} weeks at full pay.",
                f"## Remote work\n\nEmployees may work remotely up to {p['remote_days']} days "
                "per week with their manager's agreement.",
                f"## Expenses\n\nExpenses above {money(int(p['expense_limit']))} need the "
                "approval of the Chief Financial Officer.",
                f"## Equipment\n\nLaptops are replaced every {p['laptop_months']} months. "
                f"Visitor badges are {p['badge_color']}.",
                f"## Security\n\nPasswords must be changed every {p['password_days']} days. "
                f"The office wireless network is {p['wifi']}. Report security incidents to the "
                f"hotline on extension {p['hotline']}.",
                f"## Onboarding\n\nNew employees complete the onboarding course "
                f"{p['onboarding_course']} in their first week.",
            ]
        )

    def _history(self) -> str:
        events = [
            (date(self.founded, 1, 1), f"{self.founded}: {self.founder.name} founds {self.name}.")
        ]
        events += [
            (date(o.opened, 1, 1), f"{o.opened}: the {o.city} office (site {o.site_code}) opens.")
            for o in self.offices
        ]
        events += [
            (p.launched, f"{long_date(p.launched)}: {p.name} ({p.code}) launches.")
            for p in self.products
        ]
        lines = [f"- {text}" for _, text in sorted(events, key=lambda event: event[0])]
        return f"# {self.name} timeline\n\n" + "\n".join(lines)

    # ------------------------------------------------------------------ questions

    def questions(self) -> list[QA]:
        """One question per fact; every answer is stated in :meth:`documents`."""
        p, c = self.policies, self.name
        qa = [
            QA(f"In which year was {c} founded?", str(self.founded)),
            QA(f"Who founded {c}?", self.founder.name, [self.founder.surname]),
            QA(f"In which city is {c} headquartered?", self.hq),
            QA(f"Who is the Chief Executive Officer of {c}?", self.ceo.name, [self.ceo.surname]),
            QA(f"How many people does {c} employ?", f"{self.employees:,}"),
        ]
        for product in self.products:
            n = product.name
            qa += [
                QA(f"What is the product code of {n}?", product.code),
                QA(
                    f"When was {n} launched?",
                    long_date(product.launched),
                    date_aliases(product.launched),
                ),
                QA(f"What is the list price of {n}?", money(product.price)),
                QA(f"What was the internal codename of {n}?", product.codename),
                QA(f"Who is the lead engineer for {n}?", product.lead.name, [product.lead.surname]),
            ]
        for person in self.people:
            qa += [
                QA(f"What is {person.name}'s role at {c}?", person.role),
                QA(f"What is the phone extension of {person.name}?", person.extension),
            ]
        for office in self.offices:
            qa += [
                QA(f"What is the site code of the {office.city} office?", office.site_code),
                QA(f"In which year did the {office.city} office open?", str(office.opened)),
            ]
        qa += [
            QA(f"How many vacation days per year do {c} employees get?", str(p["vacation_days"])),
            QA(f"How many weeks of parental leave does {c} give?", str(p["parental_weeks"])),
            QA(
                f"Above what amount do expenses at {c} need CFO approval?",
                money(int(p["expense_limit"])),
            ),
            QA(f"How often are laptops replaced at {c}, in months?", str(p["laptop_months"])),
            QA(f"What color are visitor badges at {c}?", str(p["badge_color"])),
            QA(
                f"How often must {c} employees change their passwords, in days?",
                str(p["password_days"]),
            ),
            QA(f"What is the name of the {c} office wireless network?", str(p["wifi"])),
            QA(f"Which extension is the {c} security incident hotline?", str(p["hotline"])),
            QA(
                f"Which onboarding course do new {c} employees complete?",
                str(p["onboarding_course"]),
            ),
        ]
        return qa


def write_company(out: Path, seed: int, num_products: int = 8, num_people: int = 12) -> Company:
    """Write ``out/docs/*.md`` and ``out/qa.jsonl`` for the company of ``seed``."""
    company = Company.invent(seed, num_products, num_people)
    docs = out / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    for name, text in company.documents().items():
        (docs / name).write_text(text + "\n", encoding="utf-8")
    with (out / "qa.jsonl").open("w", encoding="utf-8") as qa_file:
        for item in company.questions():
            qa_file.write(json.dumps(asdict(item)) + "\n")
    return company


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m opd_docs.synthetic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--products", type=int, default=8)
    parser.add_argument("--people", type=int, default=12)
    args = parser.parse_args(argv)
    if args.products < 1 or args.people < 1:
        parser.error("--products and --people must be at least 1")
    company = write_company(args.out, args.seed, args.products, args.people)
    print(
        f"{company.name}: {len(company.documents())} documents in {args.out / 'docs'}, "
        f"{len(company.questions())} questions in {args.out / 'qa.jsonl'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
