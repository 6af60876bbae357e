"""The platform's alert receiver: Alertmanager posts its notifications here (webhook).

It keeps the last `ALERT_RECEIVER_KEEP` notifications in memory and shows them at
`GET /notifications`, logs each one as a structured line and counts them for Prometheus
at `GET /metrics`. It stands where a pager or a chat room stands in production
(docs/alerting.md).
"""
