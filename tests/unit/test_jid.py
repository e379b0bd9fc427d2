"""Job ids: Salt's 20-digit form, unique and ordered within a process."""

from saline.jid import format_jid_instance, gen_jid, is_jid, jid_to_time


def test_jids_are_20_digits_unique_and_increasing() -> None:
    jids = [gen_jid() for _ in range(10_000)]
    assert all(len(j) == 20 and j.isdigit() for j in jids)
    assert len(set(jids)) == len(jids)
    assert jids == sorted(jids)


def test_unique_jid_appends_pid() -> None:
    jid = gen_jid(unique_jid=True)
    assert is_jid(jid) and jid[20] == "_" and jid[21:].isdigit()


def test_jid_to_time_and_listing_format() -> None:
    assert jid_to_time("20170609172835506510") == "2017, Jun 09 17:28:35.506510"
    assert jid_to_time("nope") == ""
    listed = format_jid_instance("20170609172835506510", {"fun": "test.ping", "tgt": "*", "tgt_type": "glob", "user": "root"})
    assert listed == {"Function": "test.ping", "Arguments": [], "Target": "*", "Target-type": "glob",
                      "User": "root", "StartTime": "2017, Jun 09 17:28:35.506510"}
