"""What a member typed, parsed into a frozen `GenerationRequest`: pure, no torch."""
