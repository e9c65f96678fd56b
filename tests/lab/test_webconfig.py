"""A server whose mitigation comes from its web.config follows edits of that file."""

from __future__ import annotations

from pathlib import Path

import pytest

from exwatch.lab import ServerSpec, run_fleet_in_thread
from exwatch.lab.rewrite import mitigation_web_config

from .conftest import PROXYLOGON_COOKIE, fetch

pytestmark = pytest.mark.integration

EMPTY_SITE = """<?xml version="1.0" encoding="UTF-8"?>
<configuration>
  <system.webServer>
    <defaultDocument><files><add value="iisstart.htm" /></files></defaultDocument>
  </system.webServer>
</configuration>
"""
HAND_WRITTEN = """<?xml version="1.0" encoding="UTF-8"?>
<configuration>
  <system.webServer>
    <rewrite>
      <rules>
        <rule name="block owa probes" patternSyntax="ECMAScript" stopProcessing="true">
          <match url="^owa/auth/.*\\.js$" />
          <conditions logicalGrouping="MatchAny">
            <add input="{HTTP_COOKIE}" pattern="X-AnonResource-Backend" />
            <add input="{QUERY_STRING}" pattern="probe" />
          </conditions>
          <action type="CustomResponse" statusCode="403" statusReason="Forbidden" statusDescription="blocked" />
        </rule>
      </rules>
    </rewrite>
  </system.webServer>
</configuration>
"""


def probe(spec: ServerSpec) -> tuple[int | None, str | None]:
    a = fetch(spec, "/owa/auth/x.js", {"Cookie": PROXYLOGON_COOKIE})
    return a.status, a.header("X-CalculatedBETarget")


def test_web_config_edits_change_answers_and_truth(tmp_path: Path) -> None:
    web_config = tmp_path / "host" / "web.config"
    web_config.parent.mkdir()
    web_config.write_text(EMPTY_SITE)
    spec = ServerSpec(
        "wc1", "127.10.3.1", 18443, "https", "Exchange 2016", "15.1.2176.2", [], "standard", web_config
    )
    with run_fleet_in_thread([spec]) as fleet:
        assert probe(spec) == (500, "localhost")
        assert fleet.manifest()["servers"][0]["truth"]["proxylogon"] == "vulnerable"

        web_config.write_text(mitigation_web_config(["proxylogon"]))
        assert probe(spec) == (None, None)
        assert fetch(spec, "/owa/auth/x.js").status == 404  # control still answers
        assert fleet.manifest()["servers"][0]["truth"]["proxylogon"] == "mitigated"

        web_config.write_text(HAND_WRITTEN)  # the same effect under another name and action
        assert probe(spec) == (403, None)
        assert fetch(spec, "/owa/auth/x.js?probe=1").status == 403
        assert fetch(spec, "/owa/auth/logon.aspx").status == 200
        # a CustomResponse does not abort the probe: not the mitigation as the truth defines it
        assert fleet.manifest()["servers"][0]["truth"]["proxylogon"] == "vulnerable"

        web_config.write_text("<configuration><system.webServer>")  # broken: IIS answers 500.19
        broken = fetch(spec, "/owa/auth/logon.aspx")
        assert broken.status == 500 and b"500.19" in broken.body

        web_config.unlink()
        assert probe(spec) == (500, "localhost")

        fleet.update("wc1", mitigations=["proxylogon", "proxynotshell"])  # writes the file
        assert "PowerShell - inbound" in web_config.read_text()
        assert probe(spec) == (None, None)


def test_mitigate_apply_and_rollback_change_answers(tmp_path: Path) -> None:
    from exwatch import mitigate

    web_config = tmp_path / "web.config"
    web_config.write_text(EMPTY_SITE)
    spec = ServerSpec(
        "wc2", "127.10.3.2", 18443, "https", "Exchange 2016", "15.1.2176.2", [], "standard", web_config
    )
    with run_fleet_in_thread([spec]):
        assert probe(spec) == (500, "localhost")
        mitigate.apply(web_config, "proxylogon")
        assert probe(spec) == (None, None)
        mitigate.rollback(web_config, "proxylogon")
        assert probe(spec) == (500, "localhost")
