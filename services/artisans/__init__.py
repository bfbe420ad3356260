"""artisans: onboarding workshops and publishing their products."""
