"""What a commander does: open an incident, post an update, schedule maintenance, and the
scheduler and cadence reminders that act on their own. Records broadcasts; the engine sends them."""
