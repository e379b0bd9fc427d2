"""The built-in returners by name, as data only: the registry imports their classes from it when
chosen, and the configuration reader knows from it which keys belong to returners (it imports
nothing of saline, so both can use it without importing each other)."""

from __future__ import annotations

# name -> "module:Class". Aliases (Salt's older names) point at the same class.
BUILTIN: dict[str, str] = {
    "saline_cache": "saline.returners.saline_cache:SalineCacheReturner",
    "local": "saline.returners.local:LocalReturner",
    "local_cache": "saline.returners.local_cache:LocalCacheReturner",
    "rawfile_json": "saline.returners.rawfile_json:RawfileJsonReturner",
    "sqlite3": "saline.returners.sqlite3:Sqlite3Returner",
    "mysql": "saline.returners.mysql:MysqlReturner",
    "multi_returner": "saline.returners.multi_returner:MultiReturner",
    "postgres": "saline.returners.postgres:PostgresReturner",
    "pgjsonb": "saline.returners.pgjsonb:PgjsonbReturner",
    "postgres_local_cache": "saline.returners.postgres_local_cache:PostgresLocalCacheReturner",
    "odbc": "saline.returners.odbc:OdbcReturner",
    "redis": "saline.returners.redis:RedisReturner",
    "redis_return": "saline.returners.redis:RedisReturner",
    "splunk": "saline.returners.splunk:SplunkReturner",
    "nagios_nrdp": "saline.returners.nagios_nrdp:NagiosNrdpReturner",
    "zabbix": "saline.returners.zabbix:ZabbixReturner",
    "pushover": "saline.returners.pushover:PushoverReturner",
    "slack": "saline.returners.slack:SlackReturner",
    "sms": "saline.returners.sms:SmsReturner",
    "sentry": "saline.returners.sentry:SentryReturner",
    "django": "saline.returners.django:DjangoReturner",
    "syslog": "saline.returners.syslog:SyslogReturner",
    "smtp": "saline.returners.smtp:SmtpReturner",
    "kafka": "saline.returners.kafka:KafkaReturner",
    "xmpp": "saline.returners.xmpp:XmppReturner",
    "memcache": "saline.returners.memcache:MemcacheReturner",
    "etcd": "saline.returners.etcd:EtcdReturner",
    "influxdb": "saline.returners.influxdb:InfluxdbReturner",
    "carbon": "saline.returners.carbon:CarbonReturner",
    "couchdb": "saline.returners.couchdb:CouchdbReturner",
    "elasticsearch": "saline.returners.elasticsearch:ElasticsearchReturner",
    "mongo": "saline.returners.mongo:MongoReturner",
    "mongo_return": "saline.returners.mongo_return:MongoReturnReturner",
    "nats": "saline.returners.nats:NatsReturner",
}

# the pip extra of a built-in returner whose module's name is not its extra's
EXTRA_OF: dict[str, str] = {"pgjsonb": "postgres", "postgres_local_cache": "postgres", "mongo_return": "mongo"}
