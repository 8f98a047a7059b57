"""What a user of the agent receives: run events (`events`) and the live tree (`tree`)."""
