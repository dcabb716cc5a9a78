import json
import os
import shutil
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import types as T

src, out = sys.argv[1], sys.argv[2]
spark = (
    SparkSession.builder.master("local[1]")
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
work = "/tmp/spark_golden/work_ms"
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work + "/in")
now = time.time() - 1000
for i, f in enumerate(sorted(os.listdir(src))):
    shutil.copy(os.path.join(src, f), work + "/in/" + f)
    os.utime(work + "/in/" + f, (now + i, now + i))
s = (
    spark.readStream.schema(schema)
    .option("maxFilesPerTrigger", 1)
    .json(work + "/in")
    .withWatermark("event_time", "5 seconds")
)
rows = []


def collect(df, bid):
    for r in df.collect():
        d = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.asDict().items()}
        d["batch_id"] = bid
        rows.append(d)


q = (
    s.dropDuplicatesWithinWatermark(["event_id"])
    .writeStream.outputMode("append")
    .option("checkpointLocation", f"{work}/ck")
    .foreachBatch(collect)
    .trigger(availableNow=True)
    .start()
)
q.awaitTermination()
prog = [
    {
        "batch_id": p["batchId"],
        "watermark": p["eventTime"].get("watermark"),
        "dropped": [x.get("numRowsDroppedByWatermark") for x in p["stateOperators"]],
        "state_rows": [x.get("numRowsTotal") for x in p["stateOperators"]],
    }
    for p in q.recentProgress
]
json.dump({"dedup": {"rows": rows, "progress": prog}}, open(out, "w"), indent=1, default=str)
print(json.dumps(rows), json.dumps(prog))
