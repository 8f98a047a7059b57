"""What the actors say to each other: the dispatch protocol (`dispatch`), the lifecycle of the
tree (`lifecycle`), the steps a RunSupervisor sends itself (`run_steps`), and the event
listener's messages (`events`)."""
