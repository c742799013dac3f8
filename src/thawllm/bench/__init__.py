"""`thaw bench`: cold starts measured side by side with the usual Flask app."""
