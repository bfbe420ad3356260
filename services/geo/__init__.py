"""geo: where the workshops are, and what delivery costs across the province of Jaén."""
