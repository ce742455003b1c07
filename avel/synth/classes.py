"""The AVE class list in the standard order: order of first appearance in Annotations.txt."""

AVE_CLASSES: tuple[str, ...] = (
    "Church bell",
    "Male speech, man speaking",
    "Bark",
    "Fixed-wing aircraft, airplane",
    "Race car, auto racing",
    "Female speech, woman speaking",
    "Helicopter",
    "Violin, fiddle",
    "Flute",
    "Ukulele",
    "Frying (food)",
    "Truck",
    "Shofar",
    "Motorcycle",
    "Acoustic guitar",
    "Train horn",
    "Clock",
    "Banjo",
    "Goat",
    "Baby cry, infant cry",
    "Bus",
    "Chainsaw",
    "Cat",
    "Horse",
    "Toilet flush",
    "Rodents, rats, mice",
    "Accordion",
    "Mandolin",
)
BACKGROUND = "background"
NUM_EVENTS = len(AVE_CLASSES)  # 28
BACKGROUND_INDEX = NUM_EVENTS  # 28: the 29th label of a segment
SEGMENTS = 10  # one AVE video = ten one-second segments
