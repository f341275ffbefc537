"""What the readings mean for people: consumption queries, the bill, Tarifa Branca, forecast, reports and
alerts, gathered by the analytics service and its runtime."""
