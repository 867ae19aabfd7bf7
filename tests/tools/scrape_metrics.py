#!/usr/bin/env python3
"""Scrapes a Volley /metrics endpoint and parses it with the official
Prometheus client's OpenMetrics parser (a parse error fails the test).

Usage: scrape_metrics.py URL CA_FILE; the bearer token, if any, is read
from the VOLLEY_SCRAPE_TOKEN variable (never argv, where ps shows it).
Prints one JSON object: {"status": HTTP status, "content_type": ...,
"samples": [[name, {labels}, value], ...]}.
"""
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main():
    url, ca = sys.argv[1], sys.argv[2]
    request = urllib.request.Request(url)
    token = os.environ.get("VOLLEY_SCRAPE_TOKEN")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    context = ssl.create_default_context(cafile=ca)
    try:
        with urllib.request.urlopen(request, context=context) as response:
            text = response.read().decode("utf-8")
            content_type = response.headers.get("Content-Type", "")
            status = response.status
    except urllib.error.HTTPError as e:
        print(json.dumps({"status": e.code, "samples": []}))
        return
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.append([sample.name, sample.labels, sample.value])
    print(json.dumps({"status": status, "content_type": content_type, "samples": samples}))


if __name__ == "__main__":
    main()
