"""sdlab's shared vocabulary: parameters, objectives, campaign specs, records, statuses,
errors and the SQL tables. It imports nothing else of sdlab's."""
