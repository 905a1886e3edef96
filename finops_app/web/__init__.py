"""Web views on Faust's own server: JSON endpoints, Prometheus metrics and the dashboard."""
