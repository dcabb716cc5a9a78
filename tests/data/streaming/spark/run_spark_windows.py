"""Run the golden event sequence through real Spark Structured Streaming 4.0 and print, per
micro-batch, the watermark, the rows emitted and the rows dropped by the watermark.

One JSON-lines file per micro-batch (maxFilesPerTrigger=1), no-data batches off so Spark's
batch k is the k-th file, trigger availableNow, foreachBatch to capture each batch's output.
"""

import json
import os
import shutil
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

src = sys.argv[1]
out = sys.argv[2]
spark = (
    SparkSession.builder.master("local[1]")
    .appName("golden")
    .config("spark.sql.shuffle.partitions", "1")
    .config("spark.sql.session.timeZone", "UTC")
    .config("spark.sql.streaming.noDataMicroBatches.enabled", "false")
    .config("spark.ui.enabled", "false")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
schema = T.StructType(
    [
        T.StructField("event_id", T.LongType()),
        T.StructField("key", T.LongType()),
        T.StructField("event_time", T.TimestampType()),
        T.StructField("kind", T.StringType()),
        T.StructField("value", T.DoubleType()),
    ]
)
work = "/tmp/spark_golden/work"
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work + "/in")
files = sorted(f for f in os.listdir(src) if f.endswith(".jsonl"))
now = time.time() - 1000
for i, f in enumerate(files):
    shutil.copy(os.path.join(src, f), work + "/in/" + f)
    os.utime(work + "/in/" + f, (now + i, now + i))


def stream():
    return (
        spark.readStream.schema(schema)
        .option("maxFilesPerTrigger", 1)
        .json(work + "/in")
        .withWatermark("event_time", "5 seconds")
    )


def tumbling(s):
    return s.groupBy(F.window("event_time", "10 seconds")).agg(
        F.count("*").alias("events"), F.sum("value").alias("value")
    )


def hopping(s):
    return s.groupBy(F.window("event_time", "10 seconds", "5 seconds")).agg(
        F.count("*").alias("events"), F.sum("value").alias("value")
    )


def session(s):
    return s.groupBy("key", F.session_window("event_time", "5 seconds").alias("window")).agg(
        F.count("*").alias("events"), F.sum("value").alias("value")
    )


def dedup(s):
    return s.dropDuplicatesWithinWatermark(["event_id"])


def dedup_tumbling(s):
    return tumbling(dedup(s))


queries = {
    "tumbling_append": (tumbling, "append"),
    "tumbling_update": (tumbling, "update"),
    "hopping_append": (hopping, "append"),
    "session_append": (session, "append"),
    "dedup": (dedup, "append"),
    "dedup_tumbling_append": (dedup_tumbling, "append"),
}
result = {}
for name, (build, mode) in queries.items():
    rows = []

    def collect(df, batch_id, rows=rows):
        for r in df.collect():
            d = r.asDict(recursive=True)
            if "window" in d:
                w = d.pop("window")
                d["window_start"] = w["start"].isoformat()
                d["window_end"] = w["end"].isoformat()
            if "event_time" in d:
                d["event_time"] = d["event_time"].isoformat()
            d["batch_id"] = batch_id
            rows.append(d)

    ck = f"{work}/ck_{name}"
    q = (
        build(stream())
        .writeStream.outputMode(mode)
        .option("checkpointLocation", ck)
        .foreachBatch(collect)
        .trigger(availableNow=True)
        .start()
    )
    q.awaitTermination()
    progress = [
        {
            "batch_id": p["batchId"],
            "watermark": p["eventTime"].get("watermark"),
            "input_rows": p["numInputRows"],
            "dropped_by_watermark": [
                o.get("numRowsDroppedByWatermark") for o in p["stateOperators"]
            ],
            "state_rows": [o.get("numRowsTotal") for o in p["stateOperators"]],
        }
        for p in q.recentProgress
    ]
    result[name] = {"mode": mode, "rows": rows, "progress": progress}
    print(name, "batches", len(progress), "rows", len(rows), flush=True)
json.dump(result, open(out, "w"), indent=1, default=str)
