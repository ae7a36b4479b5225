import urllib.request

from support import require_tool, run


def test_serve_answers_echo_and_http(server):
    echoscu = require_tool("echoscu")
    proc = run([echoscu, "-v", "-aec", server.aet, server.host, str(server.dimse_port)])
    assert "Received Echo Response (Success)" in proc.stderr + proc.stdout
    with urllib.request.urlopen(server.dicomweb_url + "/status", timeout=10) as response:
        assert response.status == 200
    assert "ACCESS CONTROL IS NOT ENFORCED" in server.log()  # the test server runs with auth.enforce = false
