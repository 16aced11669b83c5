"""PII redaction: e-mail addresses, phone numbers and IP addresses become fixed placeholders.

The e-mail and IP patterns are datatrove's (module `datatrove.pipeline.formatters.pii`); as there,
only public (globally routable) IP addresses are redacted by default, so private ones like
192.168.0.1 or 127.0.0.1 stay. Redactions are counted per kind in `metadata['pii_redactions']`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from data_pipelines.document import Document

EMAIL = re.compile(
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:["
    r"A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|["
    r"01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)])")
IPV4 = re.compile(
    r'(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)')
# North-American and international numbers with separators: +1 (555) 123-4567, 555.123.4567,
# +44 20 7946 0958. A run of bare digits (a year, an ID) is not matched: separators are required.
PHONE = re.compile(
    r'(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{4}(?![\w-])')


@dataclasses.dataclass(frozen=True)
class PIIRedactor:
    email_placeholder: str = '<EMAIL_ADDRESS>'
    phone_placeholder: str = '<PHONE_NUMBER>'
    ip_placeholder: str = '<IP_ADDRESS>'
    only_public_ips: bool = True

    def _is_redacted_ip(self, text: str) -> bool:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return False
        return ip.is_global or not self.only_public_ips

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        counts = {'email': 0, 'phone': 0, 'ip': 0}

        def ip(match: re.Match) -> str:
            if not self._is_redacted_ip(match.group(0)):
                return match.group(0)
            counts['ip'] += 1
            return self.ip_placeholder

        text, counts['email'] = EMAIL.subn(self.email_placeholder, text)
        text = IPV4.sub(ip, text)  # before phones: a dotted IP must not read as a phone number
        text, counts['phone'] = PHONE.subn(self.phone_placeholder, text)
        return text, counts

    def __call__(self, doc: Document) -> Document:
        text, counts = self.redact(doc.text)
        if not any(counts.values()):
            return doc
        return Document(doc.id, text, {**doc.metadata, 'pii_redactions': counts})
