"""The ONS client against the fake portal and bucket: CKAN shapes and errors, search paging after a rename, HEAD,
downloads resumed with Range, NoSuchKey, retries, ONS down, and URLs outside the allowed hosts."""

from __future__ import annotations

import httpx
import pytest

from backend.ons.catalog import choose_files, resources_of
from backend.ons.client import OnsClient, OnsNotFound, OnsRequestError, OnsUnavailable
from backend.ons.datasets import BALANCE
from devstack.ons_fake import FakeOns

BALANCE_2026 = "/dataset/balanco_energia_subsistema_ho/BALANCO_ENERGIA_SUBSISTEMA_2026.csv"


@pytest.mark.asyncio
async def test_package_show_lists_the_yearly_files_and_ckan_errors_keep_their_shapes(fake: FakeOns,
                                                                                    client: OnsClient) -> None:
    pkg = await client.package_show("balanco-energia-subsistema")
    assert pkg["name"] == "balanco-energia-subsistema" and len(pkg["resources"]) == 85
    files = choose_files(BALANCE, resources_of(pkg), first_year=2025)
    assert [f.url.rsplit("/", 1)[1] for f in files] == ["BALANCO_ENERGIA_SUBSISTEMA_2025.parquet",
                                                       "BALANCO_ENERGIA_SUBSISTEMA_2026.parquet"]
    with pytest.raises(OnsNotFound, match="Not Found Error"):
        await client.package_show("nao-existe")
    with pytest.raises(OnsRequestError) as missing_id:
        await client.call("package_show", {})
    assert missing_id.value.status == 409 and missing_id.value.code == "Validation Error"
    with pytest.raises(OnsNotFound):  # ONS serves files, not a DataStore
        await client.call("datastore_search", {"resource_id": pkg["resources"][0]["id"]})
    raw = httpx.get(f"{fake.url}/api/3/action/package_show")
    assert raw.status_code == 409 and raw.json() == {
        "help": "https://dados.ons.org.br/api/3/action/help_show?name=package_show", "success": False,
        "error": {"id": ["Missing value"], "__type": "Validation Error"}}


@pytest.mark.asyncio
async def test_a_renamed_dataset_is_found_by_paging_through_package_search(fake: FakeOns, client: OnsClient) -> None:
    fake.fillers = 110  # 110 other matches come first: three pages of 50
    fake.rename("curva-carga", "curva-carga-2")
    pkg = await client.find_package("curva-carga")
    assert pkg["name"] == "curva-carga-2"
    starts = [path for m, path, _ in fake.requests if "package_search" in path]
    assert len(starts) == 3 and "start=100" in starts[-1]


@pytest.mark.asyncio
async def test_head_gives_etag_last_modified_and_size_and_nosuchkey_is_not_found(fake: FakeOns,
                                                                                  client: OnsClient) -> None:
    meta = await client.head(fake.url + BALANCE_2026)
    data, got = await client.download(fake.url + BALANCE_2026)
    assert got == meta and meta.size == len(data) and meta.etag.startswith('"') and "GMT" in meta.last_modified
    assert data.startswith(b"id_subsistema;nom_subsistema;din_instante;val_gerhidraulica")
    with pytest.raises(OnsNotFound) as gone:  # ONS's irregular names: the guessed one does not exist
        await client.download(fake.url + "/dataset/cmo_tm/CMO_SEMI_HORARIO_2026.csv")
    assert gone.value.code == "NoSuchKey" and "does not exist" in str(gone.value)
    with pytest.raises(OnsNotFound):
        await client.head(fake.url + "/dataset/cmo_tm/CMO_SEMI_HORARIO_2026.csv")


@pytest.mark.asyncio
async def test_a_download_cut_half_way_resumes_with_range_and_if_range(fake: FakeOns, client: OnsClient) -> None:
    whole, _ = await client.download(fake.url + BALANCE_2026)
    fake.fail("cut", where="s3")
    data, meta = await client.download(fake.url + BALANCE_2026)
    assert data == whole and client.resumed == 1
    last = fake.requests[-1][2]
    assert last["Range"] == f"bytes={len(whole) // 2}-" and last["If-Range"] == meta.etag


@pytest.mark.asyncio
async def test_a_file_rewritten_between_the_cut_and_the_resume_is_downloaded_whole_again(fake: FakeOns) -> None:
    async def revise_before_resume(request: httpx.Request) -> None:
        if "range" in request.headers:  # ONS rewrites the file while we reconnect
            fake.revise("balanco", 2026, "2026-01-01 00:00:00", "N", "val_carga", 1.0)

    async with httpx.AsyncClient(event_hooks={"request": [revise_before_resume]}) as http:
        client = OnsClient(fake.url, http=http, attempts=3, backoff_s=0.01, backoff_max_s=0.02)
        fake.fail("cut", where="s3")
        data, meta = await client.download(fake.url + BALANCE_2026)
    assert client.resumed == 0 and meta.size == len(data)  # If-Range did not match: 200 with the new file
    assert b"N  ;NORTE;2026-01-01 00:00:00;11587.04600000;1864.90700000;263.01900000;0E-8;1.00000000;" in data


@pytest.mark.asyncio
async def test_transient_failures_are_retried_and_ons_down_ends_in_unavailable(fake: FakeOns,
                                                                              client: OnsClient) -> None:
    fake.fail("500", count=2, where="ckan")
    assert (await client.package_show("cmo-semi-horario"))["name"] == "cmo-semi-horario"
    fake.fail("html", where="ckan")
    fake.fail("drop", where="ckan")
    assert (await client.package_show("cmo-semi-horario"))["name"] == "cmo-semi-horario"
    fake.fail("503", count=2, where="s3")
    assert (await client.head(fake.url + BALANCE_2026)).size
    assert client.retries == 6
    fake.down = True
    with pytest.raises(OnsUnavailable, match="3 tentativas"):
        await client.package_show("cmo-semi-horario")
    with pytest.raises(OnsUnavailable):
        await client.download(fake.url + BALANCE_2026)


@pytest.mark.asyncio
async def test_files_outside_the_allowed_hosts_are_refused(fake: FakeOns) -> None:
    async with OnsClient(fake.url, file_hosts=["ons-aws-prod-opendata.s3.amazonaws.com"], attempts=1) as c:
        for url in ("http://169.254.169.254/latest/meta-data", "file:///etc/passwd",
                    "https://evil.example/dataset/x_2026.csv"):
            with pytest.raises(OnsRequestError, match="hosts permitidos"):
                await c.head(url)
        assert (await c.head(fake.url + BALANCE_2026)).size  # the portal's own host is always allowed


def test_the_fake_bucket_answers_ranges_and_conditionals_as_s3(fake: FakeOns) -> None:
    url = fake.url + BALANCE_2026
    whole = httpx.get(url)
    etag, size = whole.headers["etag"], len(whole.content)
    assert whole.headers["accept-ranges"] == "bytes" and "x-amz-version-id" not in whole.headers
    tail = httpx.get(url, headers={"Range": "bytes=-40000"})  # the tail read public clients use
    assert tail.status_code == 206 and tail.content == whole.content[-40000:]
    assert tail.headers["content-range"] == f"bytes {size - 40000}-{size - 1}/{size}"
    bad = httpx.get(url, headers={"Range": f"bytes={size + 10}-"})
    assert bad.status_code == 416 and b"<Code>InvalidRange</Code>" in bad.content
    assert httpx.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert httpx.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'}).status_code == 200
    head = httpx.head(fake.url + "/dataset/balanco_energia_subsistema_ho/BALANCO_ENERGIA_SUBSISTEMA_2026.xlsx")
    assert head.status_code == 404 and head.content == b""
