"""Names and defaults shared by every part of adclick.

One place for topic names, endpoints and paths so the job, the loader, the API and the
generator cannot drift apart. Each default can be overridden by an ADCLICK_* environment
variable, and every command also takes flags.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACK_DIR = Path(os.environ.get("ADCLICK_STACK_DIR", ROOT / ".stack"))
# Where `make jars` puts the Kafka broker, the Flink connector and adclick's format: part of the
# checkout's build, so not moved by ADCLICK_STACK_DIR (which moves a run's data and logs).
JARS_DIR = ROOT / ".stack" / "jars"

KAFKA_BOOTSTRAP = os.environ.get("ADCLICK_KAFKA", "127.0.0.1:9092")
CLICKHOUSE_URL = os.environ.get("ADCLICK_CLICKHOUSE_URL", f"chdb://{STACK_DIR / 'chdb'}")
API_HOST = os.environ.get("ADCLICK_API_HOST", "127.0.0.1")
API_PORT = int(os.environ.get("ADCLICK_API_PORT", "8000"))
# The REST API of `make demo`'s local job (a standalone cluster's is 8081, flink-conf/).
DEMO_FLINK_REST_PORT = int(os.environ.get("ADCLICK_DEMO_FLINK_REST_PORT", "8082"))
DATABASE = os.environ.get("ADCLICK_DATABASE", "adclick")
DEMO_API_KEY_FILE = STACK_DIR / "api-key"  # written by `make demo` (adclick serve --api-key-file)


def default_api_key():
    """ADCLICK_API_KEY, else the key `make demo` created, so local tools work without setup."""
    key = os.environ.get("ADCLICK_API_KEY")
    if not key and DEMO_API_KEY_FILE.exists():
        key = DEMO_API_KEY_FILE.read_text().strip()
    return key or None


class Topics:
    """Kafka topics: the three inputs and the seven the Flink job writes transactionally.

    The late and dead-letter topics keep their first names, from when clicks were the only
    input; their records name the event type they hold.
    """

    CLICKS = os.environ.get("ADCLICK_TOPIC_CLICKS", "ad-clicks")
    IMPRESSIONS = os.environ.get("ADCLICK_TOPIC_IMPRESSIONS", "ad-impressions")
    CONVERSIONS = os.environ.get("ADCLICK_TOPIC_CONVERSIONS", "ad-conversions")
    COUNTS = os.environ.get("ADCLICK_TOPIC_COUNTS", "ad-click-counts")
    TOP = os.environ.get("ADCLICK_TOPIC_TOP", "ad-top-minute")
    LATE = os.environ.get("ADCLICK_TOPIC_LATE", "ad-clicks-late")
    DLQ = os.environ.get("ADCLICK_TOPIC_DLQ", "ad-clicks-dlq")
    CONVERSIONS_UNIQUE = os.environ.get("ADCLICK_TOPIC_CONVERSIONS_UNIQUE",
                                        "ad-conversions-unique")
    ATTRIBUTIONS = os.environ.get("ADCLICK_TOPIC_ATTRIBUTIONS", "ad-conversion-attributions")
    MINUTES = os.environ.get("ADCLICK_TOPIC_MINUTES", "ad-minutes-closed")

    # The input topics' roles, and the event type each one carries.
    INPUTS = {"clicks": "click", "impressions": "impression", "conversions": "conversion"}

    @classmethod
    def with_prefix(cls, prefix):
        """Topic names for an isolated run (tests, benchmarks) sharing one broker."""
        return {
            "clicks": prefix + cls.CLICKS,
            "impressions": prefix + cls.IMPRESSIONS,
            "conversions": prefix + cls.CONVERSIONS,
            "counts": prefix + cls.COUNTS,
            "top": prefix + cls.TOP,
            "late": prefix + cls.LATE,
            "dlq": prefix + cls.DLQ,
            "conversions_unique": prefix + cls.CONVERSIONS_UNIQUE,
            "attributions": prefix + cls.ATTRIBUTIONS,
            "minutes": prefix + cls.MINUTES,
        }


# Partitions of every topic adclick creates (adclick.topics; scripts/kafka.sh sets the same
# broker default): the input's parallelism, and what tests spread clicks over.
PARTITIONS = 4

# The attributes the job aggregates by, and its window: one minute.
AGGREGATED_ATTRIBUTES = ("country", "device")
WINDOW_SECONDS = 60
WINDOW_MS = WINDOW_SECONDS * 1000

# Job defaults (each is a flag of jobs/ad_click_aggregation.py).
WATERMARK_DELAY_SECONDS = 5
ALLOWED_LATENESS_SECONDS = 300
DEDUP_HORIZON_SECONDS = 3600
# Impressions, twenty or more per click, are remembered for less: a resend comes within minutes,
# and one later than the allowed lateness plus a minute is too late to count anyway.
IMPRESSION_DEDUP_HORIZON_SECONDS = 600
TOP_N = 100
MAX_PAYLOAD_BYTES = 4096
MAX_FUTURE_SECONDS = 3600
MIN_CLICK_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: older timestamps are absurd
# A conversion counts for its click when it comes within this long after the click.
ATTRIBUTION_WINDOW_SECONDS = 7 * 24 * 3600
# Invalid traffic (issue 26; sql/flink/25_traffic_labels.sql): a click is a repeat_click when
# its user clicked the same ad less than this long before it, and an ip_frequency click when
# its ip key made IP_FREQUENCY_THRESHOLD clicks or more on the ad in the window before it.
REPEAT_CLICK_WINDOW_SECONDS = 10
IP_FREQUENCY_WINDOW_SECONDS = 600
IP_FREQUENCY_THRESHOLD = 3
# What a count row's `traffic` says: valid, or the reason it is not (first match in this order).
TRAFFIC_REASONS = ("bot_user_agent", "datacenter_ip", "repeat_click", "ip_frequency")
# How long a conversion whose click has not been counted yet waits for it.
CONVERSION_WAIT_SECONDS = 3600
