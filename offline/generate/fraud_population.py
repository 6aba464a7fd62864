"""Who lives in the fraud world: account roles and the per-account traits that drive traffic.

Everything here is O(accounts) and built once; it is the only state that lives for the
whole run. Per-person traits are stored aligned with `Population.persons` (position i
describes account `persons[i]`), so day simulation can work on positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERSON, MERCHANT, BILLER, EMPLOYER, AGENT = range(5)
ROLE_NAMES = ("person", "merchant", "biller", "employer", "agent")

# Share of accounts per role, besides persons (the rest). Fresh accounts are persons
# opened only to receive or move dirty money: they have no ordinary history.
ROLE_SHARES = {MERCHANT: 0.05, BILLER: 0.005, EMPLOYER: 0.015, AGENT: 0.01}
FRESH_SHARE = 0.003
# Share of active persons who will act as money mules/launderers at some point.
MULE_SHARE = 0.02
MIN_ACCOUNTS = 200

CONTACTS = 5  # personal contact list length
CONTACT_SPAN = 60  # contacts are drawn from this many ring neighbours either side: communities
BILLS = 3  # most billers a person pays
FAVOURITES = 2  # favourite merchants per person
EMPLOYED = 0.75


@dataclass(frozen=True)
class Population:
    n: int
    role: np.ndarray  # int8 per account
    persons: np.ndarray  # active persons: accounts with ordinary traffic
    fresh: np.ndarray  # person accounts that only ever appear in fraud patterns
    mule: np.ndarray  # bool per account: may be recruited into a pattern
    merchants: np.ndarray
    billers: np.ndarray
    employers: np.ndarray
    agents: np.ndarray
    businesses: np.ndarray  # merchants then employers: both sides of business-to-business payments
    # Per account
    scale: np.ndarray  # float64 amount multiplier (wealth / size)
    # Per active person (aligned with `persons`)
    activity: np.ndarray  # float64, mean 1: how often this person transacts
    contacts: np.ndarray  # (P, CONTACTS) account indices
    favourites: np.ndarray  # (P, FAVOURITES) positions in `merchants`
    home_agent: np.ndarray  # account index of the cash agent this person usually uses
    employer_pos: np.ndarray  # position in `employers`, -1 when not salaried
    salary: np.ndarray  # float64 monthly salary
    bill_to: np.ndarray  # (P, BILLS) account index of the biller, -1 for no bill
    bill_day: np.ndarray  # (P, BILLS) day of month the bill is debited
    bill_amount: np.ndarray  # (P, BILLS) float64 usual bill
    # Per employer (aligned with `employers`)
    pay_biweekly: np.ndarray  # bool
    pay_day: np.ndarray  # monthly: day of month; bi-weekly: first pay day index (a weekday)
    pay_hour: np.ndarray  # hour of the payroll batch run
    # Per merchant / business: Zipf-like popularity as cumulative probabilities
    merchant_cdf: np.ndarray
    merchant_ticket: np.ndarray  # float64 typical basket per merchant (aligned with `merchants`)
    business_cdf: np.ndarray


def build_population(n: int, rng: np.random.Generator) -> Population:
    """Draw roles and traits for `n` accounts."""
    if n < MIN_ACCOUNTS:
        raise ValueError(f"a fraud world needs at least {MIN_ACCOUNTS} accounts to plant its patterns; got {n}")
    counts = {role: max(2, round(share * n)) for role, share in ROLE_SHARES.items()}
    n_fresh = max(5, round(FRESH_SHARE * n))
    n_person = n - sum(counts.values())
    role = np.full(n, PERSON, np.int8)
    start = 0
    for r in (MERCHANT, BILLER, EMPLOYER, AGENT):
        role[start:start + counts[r]] = r
        start += counts[r]
    # Shuffled so that an account id says nothing about its role.
    role = rng.permutation(role)
    by_role = {r: np.flatnonzero(role == r) for r in range(5)}
    all_persons = rng.permutation(by_role[PERSON])
    fresh, persons = np.sort(all_persons[:n_fresh]), np.sort(all_persons[n_fresh:])
    n_p = len(persons)
    if n_p != n_person - n_fresh:
        raise AssertionError("role bookkeeping is off")

    mule = np.zeros(n, bool)
    mule[rng.choice(persons, size=max(32, round(MULE_SHARE * n_p)), replace=False)] = True
    mule[fresh] = True

    scale = rng.lognormal(0.0, 0.5, n)
    scale[by_role[MERCHANT]] = rng.lognormal(0.0, 0.8, counts[MERCHANT])
    activity = rng.lognormal(-0.9**2 / 2, 0.9, n_p)

    merchants, employers = by_role[MERCHANT], by_role[EMPLOYER]
    businesses = np.concatenate([merchants, employers])
    merchant_cdf = _zipf_cdf(rng, len(merchants), 1.1)
    return Population(
        n=n,
        role=role,
        persons=persons,
        fresh=fresh,
        mule=mule,
        merchants=merchants,
        billers=by_role[BILLER],
        employers=employers,
        agents=by_role[AGENT],
        businesses=businesses,
        scale=scale,
        activity=activity,
        contacts=_contacts(rng, persons),
        favourites=draw(merchant_cdf, rng.random((n_p, FAVOURITES))),
        home_agent=rng.choice(by_role[AGENT], size=n_p),
        employer_pos=np.where(
            rng.random(n_p) < EMPLOYED,
            draw(_zipf_cdf(rng, len(employers), 1.0), rng.random(n_p)),
            -1,
        ),
        salary=rng.lognormal(np.log(2800.0), 0.45, n_p) * np.sqrt(scale[persons]),
        **_bills(rng, persons, by_role[BILLER], scale),
        **_payroll(rng, len(employers)),
        merchant_cdf=merchant_cdf,
        merchant_ticket=rng.lognormal(np.log(30.0), 0.7, len(merchants)),
        business_cdf=_zipf_cdf(rng, len(businesses), 1.0),
    )


def draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Positions drawn from a cumulative distribution, one per uniform number in `u`."""
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _zipf_cdf(rng: np.random.Generator, k: int, exponent: float) -> np.ndarray:
    """Cumulative popularity of k entities: rank r gets weight 1/r^exponent, ranks shuffled."""
    weights = 1.0 / np.arange(1, k + 1) ** exponent
    cdf = np.cumsum(rng.permutation(weights))
    return cdf / cdf[-1]


def _contacts(rng: np.random.Generator, persons: np.ndarray) -> np.ndarray:
    """Contacts among ring neighbours, so that peer transfers form communities."""
    n_p = len(persons)
    ring = rng.permutation(n_p)  # ring[i]: position on the ring of person i
    at = np.empty(n_p, np.int64)
    at[ring] = np.arange(n_p)  # at[k]: the person at ring position k
    span = min(CONTACT_SPAN, (n_p - 1) // 2)
    # A non-zero step smaller than half the ring never lands back on the person.
    step = rng.integers(1, span + 1, (n_p, CONTACTS)) * rng.choice((-1, 1), (n_p, CONTACTS))
    return persons[at[(ring[:, None] + step) % n_p]]


def _bills(rng: np.random.Generator, persons: np.ndarray, billers: np.ndarray, scale: np.ndarray) -> dict:
    n_p = len(persons)
    has = np.arange(BILLS)[None, :] < rng.integers(0, BILLS + 1, n_p)[:, None]
    bill_to = np.where(has, rng.choice(billers, (n_p, BILLS)), -1)
    # Many bills fall on the 1st of the month; the rest anywhere up to the 28th.
    bill_day = np.where(rng.random((n_p, BILLS)) < 0.3, 1, rng.integers(1, 29, (n_p, BILLS))).astype(np.int8)
    bill_amount = rng.lognormal(np.log(80.0), 0.8, (n_p, BILLS)) * scale[persons][:, None]
    return {"bill_to": bill_to, "bill_day": bill_day, "bill_amount": bill_amount}


def _payroll(rng: np.random.Generator, n_employers: int) -> dict:
    biweekly = rng.random(n_employers) < 0.35
    monthly_day = rng.choice(np.array([1, 15, 25, 28]), n_employers)
    # Bi-weekly runs start on a weekday within the first two weeks (day index 0 is a Monday).
    first_run = rng.integers(0, 5, n_employers) + 7 * rng.integers(0, 2, n_employers)
    return {
        "pay_biweekly": biweekly,
        "pay_day": np.where(biweekly, first_run, monthly_day),
        "pay_hour": rng.integers(1, 6, n_employers),
    }
