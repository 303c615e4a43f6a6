"""Budget-constrained allocation with OR-Tools — issue 4; empty until it lands."""
