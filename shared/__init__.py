"""The wideviews shared package: contracts every service meets through (messages, records, layout, config)."""
