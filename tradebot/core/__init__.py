"""The ground floor: errors, config base, file writes, NSE time. Imports nothing above it."""
