"""Personal data in text: find it, count it by type, and redact it with typed placeholders.

Pattern-based with checksums where the type has one (payment cards: Luhn; IBANs: ISO 13616
mod-97; IPs: octet ranges), so that order numbers and amounts are not mistaken for cards.
Presidio's default engine needs a spaCy model from the network; its offline regex recognisers
cover the same types as these, so we keep the dependency out (../shared/research/ecosystem.md).
"""
from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable

PLACEHOLDERS = {
    "email": "<EMAIL>",
    "card": "<CARD_NUMBER>",
    "iban": "<IBAN>",
    "ip": "<IP_ADDRESS>",
    "national_id": "<NATIONAL_ID>",
    "phone": "<PHONE>",
}


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of payment card numbers.

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """ISO 13616 mod-97 check.

    >>> iban_ok("GB82 WEST 1234 5698 7654 32"), iban_ok("GB82 WEST 1234 5698 7654 33")
    (True, False)
    """
    compact = re.sub(r"\s", "", text).upper()
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _ip_ok(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _card_ok(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


_DATE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")


def _phone_ok(text: str) -> bool:
    """9-15 digits, written like a phone number (a +/() prefix or 2+ separators), not a date.

    >>> _phone_ok("12345678"), _phone_ok("2024-01-05"), _phone_ok("555-123-4567"), _phone_ok("+447911123456")
    (False, False, True, True)
    """
    digits = re.sub(r"\D", "", text)
    separators = len(re.findall(r"[ .-]", text.strip()))
    shaped = text.lstrip().startswith(("+", "(")) or separators >= 2
    return 9 <= len(digits) <= 15 and shaped and not _DATE.match(text.strip())


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern
    valid: Callable[[str], bool] = lambda text: True


# Order matters: earlier detectors claim their spans first (a card number is not also a phone).
DETECTORS = [
    Detector("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")),
    Detector("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), iban_ok),
    Detector("card", re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), _card_ok),
    Detector("ip", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b"), _ip_ok),
    # US SSN (not 000/666/9xx area) and UK National Insurance numbers.
    Detector("national_id", re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"
                                       r"|\b[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")),
    Detector("phone", re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?!\w)"),
             _phone_ok),
]


_DIGIT = re.compile(r"\d")


def find_pii(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, kind) spans of personal data, in text order.

    >>> find_pii("mail jo@example.com or call +44 20 7946 0958")
    [(5, 19, 'email'), (28, 44, 'phone')]
    """
    # Cheap gates first: every detector but e-mail needs a digit, e-mail needs an "@". Most text
    # has neither, and six regex scans per field were the slowest step of cleaning.
    has_digit, has_at = _DIGIT.search(text) is not None, "@" in text
    if not (has_digit or has_at):
        return []
    taken: list[tuple[int, int, str]] = []
    for detector in DETECTORS:
        if (detector.kind == "email" and not has_at) or (detector.kind != "email" and not has_digit):
            continue
        for match in detector.pattern.finditer(text):
            start, end = match.span()
            if any(start < e and s < end for s, e, _ in taken) or not detector.valid(match.group()):
                continue
            taken.append((start, end, detector.kind))
    return sorted(taken)


def redact(text: str) -> tuple[str, Counter]:
    """The text with each piece of personal data replaced by its placeholder, and counts per type.

    >>> redact("card 4111 1111 1111 1111, ip 10.0.0.1")
    ('card <CARD_NUMBER>, ip <IP_ADDRESS>', Counter({'card': 1, 'ip': 1}))
    """
    spans = find_pii(text)
    counts = Counter(kind for _, _, kind in spans)
    for start, end, kind in reversed(spans):
        text = text[:start] + PLACEHOLDERS[kind] + text[end:]
    return text, counts
