"""Salt's ``mongo_return`` returner: returns as ``saltReturns`` documents, with the ``mongo.*`` options.

The older of Salt's two MongoDB returners. It writes the same documents as ``mongo``
(:mod:`saline.returners.mongo`, which holds the connection and the document shape); it has no
job loads, no events and no read side.
"""

from __future__ import annotations

from saline.returners.base import Option
from saline.returners.mongo import MongoBase


class MongoReturnReturner(MongoBase):
    """Salt's ``mongo_return``: one ``saltReturns`` document per return, in ``mongo.db``.

    The document is Salt's, the same as the ``mongo`` returner writes::

        saltReturns  {minion, jid, return, fun, full_ret[, out]}   dots in the keys of return
                     and full_ret turned into "-"

    Its options are read as ``mongo.*`` (as Salt's were: the module's options name is ``mongo``),
    so one set of ``mongo.host``/``mongo.port``/``mongo.db``/``mongo.user``/``mongo.password``
    serves both MongoDB returners. ``mongo.uri`` is a saline addition here (Salt's
    ``mongo_return`` never read it); ``uri`` and ``host`` together are an error.

    Differences from Salt: one ``MongoClient`` per returner with its connections kept (Salt's
    made one per call, salt#55999); ``mongo.user``/``mongo.password`` work with pymongo 4 (Salt's
    called ``db.authenticate``, which pymongo 4 removed, so credentials failed every return;
    users kept in ``mongo.db`` rather than ``admin`` need ``mongo.auth_source``); a batch is one
    ``insert_many``; a unique index on ``(jid, minion)`` makes a batch delivered twice stored
    once; a return with the jid ``req`` gets a jid of its own. Salt's ``get_jid``/``get_fun``
    were reachable only through the ``ret`` execution module; in saline a read side is whole
    or absent, so to read these documents back (``jobs.lookup_jid``, ``get_fun``) use the
    ``mongo`` returner on the same database (``master_job_cache: mongo``), which reads the
    same ``saltReturns``.

    Example, in ``mongosh``::

        db.saltReturns.find({minion: "web1"}, {_id: 0, jid: 1, fun: 1, return: 1}).sort({jid: -1}).limit(5)
    """

    name = "mongo_return"
    prefix = "mongo"
    summary = "MongoDB: Salt's saltReturns documents (the older mongo_return; options mongo.*), insert_many batches"
    # the same options as ``mongo``; its indexes are on saltReturns only (it writes nothing else)
    options = tuple(Option("indexes", bool, False, doc="also create Salt's indexes on saltReturns: minion, jid "
                                                        "(and fun)") if o.name == "indexes" else o
                    for o in MongoBase.options)
