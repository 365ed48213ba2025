// Quote checks, event-log replay and appraisal (pure Swift). See docs/ARCHITECTURE.md.
