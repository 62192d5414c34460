"""Small built-in word lists for the synthetic generators and the filler text.

Written for this project (no downloads). Splits are made from these lists by a
stable hash, so train and held-out data never share a key, value or name.
"""

ADJECTIVES = """
able amber ancient angry arctic autumn awful bald bitter black blazing bold
brave brief bright broad broken bronze busy calm careful cheap cheerful chilly
clean clever cloudy coastal cold cosmic crimson crisp cruel curly damp dark
deep dense dizzy dry dusty eager early easy electric elegant empty equal exotic
faint fancy fast fierce filthy fine flat fluffy foggy fragile frozen fuzzy
gentle giant gifted glad glossy golden grand grassy gray great green grim
happy hard harsh heavy hidden hollow honest hot huge humble hungry icy idle
jolly juicy keen kind large late lazy lemon light little lively lonely long
loud lucky lunar magic major marble massive mellow merry mild misty modern
muddy narrow neat nervous new nimble noble noisy odd olive orange pale patient
plain polite poor proud purple quick quiet rapid rare raw ready red rich rigid
ripe rocky rosy rough round royal rusty sacred salty sandy scarlet secret
sharp shiny short shy silent silky silver simple sleepy slim slow small smooth
snowy soft solar solid sour spare spicy square stale steady steep sticky stormy
strange strict strong sturdy sudden sunny super sweet swift tall tame tender
thick thin tidy tiny tough tropical upper urban vague vast velvet violet vital
warm wary weak wet white whole wide wild windy wise wooden young zesty
""".split()

NOUNS = """
acorn anchor apple arrow badge bagel bakery balloon banjo barrel basket beacon
beaver bell bicycle biscuit blanket boat bottle bridge brook brush bucket
button cabin cactus camel candle canyon carpet castle cattle cavern cedar chair
cherry circle cliff clock cloud comet compass cookie copper cottage crayon
crystal cup curtain daisy desert diamond dragon drum eagle engine falcon feather
fence fiddle flag flame flute forest fossil fountain fox garden garlic gate
glacier globe goat grape guitar hammer harbor harp hawk helmet hill honey
horizon island jacket jungle kettle kitten ladder lake lantern lemon lily
lizard magnet mango maple meadow melon mirror monkey moon mountain needle nest
oak ocean orchard otter owl paddle palace panda parrot peach pebble pepper
piano pillow pine planet plum pocket pond puppy quartz rabbit raven ribbon
river robot rocket saddle sail salmon scarf shadow shell ship spider spoon
squirrel star statue stone storm stream sugar summit sunset swan sword table
temple thunder tiger timber tomato tower tractor trumpet tulip tunnel turtle
umbrella valley velvet violin volcano wagon walnut whale whistle willow window
wizard wolf zebra
""".split()

FIRST_NAMES = """
Mary John Sandra Daniel Alice Bob Fred Julie Emma Jason Bill Jeff Lily Gertrude
Winona Yann Sumit Antoine Brian Greg Bernhard Julius Oliver Amelia Noah Ava
Liam Mia Ethan Zoe Lucas Nora Leo Ruby Oscar Hazel Felix Iris Hugo Clara Max
Vera Otto Nina Ivan Lena Omar Sara Raj Tara Kofi Ada Ken Yuki Marco Elena
Pablo Rosa Tomas Ingrid Pierre Chloe Dmitri Anya Kwame Zara Mateo Freya Arjun
Leila Sven Astrid Diego Lucia Hiro Mei Tariq Noor Paolo Greta
""".split()

PLACES = """
bathroom bedroom kitchen garden hallway office garage cellar attic balcony
library studio pantry lobby porch
""".split()

OBJECTS = """
apple football milk book key ball cup hat pen lamp box coin map phone ring
""".split()

# Neutral sentences for filler text; combined at random into varied prose.
FILLER_SUBJECTS = """
the farmer|the river|the old clock|the small town|the wind|the teacher|
the market|the traveller|the north road|the library|the baker|the morning train|
the harbour|the garden|the village choir|the painter|the evening sky|
the shepherd|the bridge|the old map
""".replace("\n", "").split("|")

FILLER_VERBS = """
watched|carried|followed|remembered|crossed|painted|opened|waited for|passed|
described|found|kept|measured|visited|counted|repaired|greeted|mentioned
""".replace("\n", "").split("|")

FILLER_OBJECTS = """
the long valley|a quiet field|the stone wall|the distant hills|a wooden cart|
the empty square|the slow stream|a narrow path|the bright window|an old song|
the morning light|the busy street|a red door|the green fields|the cold lake|
the last lantern|a loaf of bread|the tall trees|the small boat|a patient crowd
""".replace("\n", "").split("|")

FILLER_ENDINGS = """
before noon|after the rain|in the spring|near the hill|without a word|
at dawn|for a while|once again|in silence|by the shore|every day|
along the way|at the edge of town|under a clear sky
""".replace("\n", "").split("|")
