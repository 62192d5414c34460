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

# More everyday nouns and verbs, added for common-words extraction (CWE), whose lists need
# hundreds of distinct words per split. Appended after the lists above (which the shipped
# tokenizer was trained on) and never mixed into them.
CWE_NOUNS = """
actor airport album alley angle ankle answer apron arch army artist atlas attic
avenue axe bacon badger bakery ballet bamboo bandage banner barn basin bean
bear bed bench berry blade blender blossom bone bonnet boot border bowl box
bracelet branch brick broom bubble buffalo bugle bunny butter cabbage cable
cafe cake calendar camera canal candy canoe canvas cape captain card carrot
cart cashew castle cat cave ceiling cellar chalk channel cheese chess chicken
chimney chin church cinema citizen clam clay coach coast coat cobweb coconut
coffee coin collar comb corner costume cotton couch cow crab crane cricket
crown crow cushion daughter deer dentist diary dinner doctor dog dolphin donkey
door dough dove dress driver duck dust ear earth elbow elephant elk envelope
eraser fabric factory fairy farm fern ferry field finger fish flower fog
folder football frog fruit furnace galaxy gallery garage gecko gem ghost
giraffe glove glue goose gown grain grass gravel guest gull hall hamster
handle hat heart hedge hen hero hive hobby hook horn horse hose hotel hound
iceberg igloo ink insect iron ivy jar jelly jewel judge jug kangaroo key
kingdom kite knee knife knot koala label lamb lamp lawn leaf leather letter
library lion lobster lock locket log magazine mailbox mammoth map marble mask
meadow medal mermaid milk mitten mole moose moth motor mouse mug museum
mushroom napkin necklace nephew noodle notebook nurse nut oar octopus onion
orange organ oven owl oyster page paint pancake paper parade parcel park
pasta path peanut pear pelican pen pencil penguin pie pig pilot pipe pirate
pizza plate pony poppy potato pot printer puddle pumpkin puzzle quilt rail
rain raft ranch reef rhino rice ring road robin rope rose ruler sand sandal
sausage scarecrow school scissors seal seed sheep shelf shirt shoe shovel
shrimp sink skate skirt sled slipper snail snake soap sock sofa soup sparrow
sponge spring squid stable stamp stool stove straw street string student
suitcase sweater swing tablet tail teacher teapot tent thimble thread ticket
tile toast toe tooth torch towel toy train tray tree truck trunk tub turnip
vase vest village vine wallet wand wardrobe wasp watch wave wheat wheel wing
wool worm yacht yard yarn yogurt zipper
""".split()

CWE_VERBS = """
accept add admire agree allow answer appear arrive ask bake balance bathe beg
behave believe belong bless blink boil borrow bounce bow breathe bring brush
build bump buy call camp care carry catch cause change charge chase cheer chew
choose clap climb close collect comb come cook copy cough count crawl cry cut
dance dare decide deliver design dig dine dive divide doubt drag draw dream
dress drift drink drive dry earn eat enjoy enter escape explain explore fail
fetch fill finish fix float fold fly follow forget forgive gather giggle give
glow grab grin grow guard guess hang help hide hike hold hop hug hum hunt
hurry imagine improve invent invite iron jog join joke juggle jump kick kneel
knit knock laugh launch learn lend lift listen live look love march marry
melt mend mix move nap nod notice obey offer open order pack paddle paint
park pause pedal pick plan plant play please point polish pour practise pray
pretend print promise pull pump punch push race rain reach read relax remind
repeat reply rest return ride ring rinse roar roll rub run rush sail save
scrub search sell send sew shake share shout show sing sink sip sit skate ski
skip sleep slide smell smile sneeze sniff snore solve sort speak spell spin
splash spray sprint squeeze stack stand stare start stay steer step stir stop
stretch stroll study swim swing talk taste teach tease tell thank think throw
tickle tidy tie tip toss trace trade travel trust try tug turn twist type
unlock unpack untie use vanish visit wade wait wake walk wander want warn
wash wave weave whisper whistle win wink wish wonder work worry wrap write
yawn yell zoom
""".split()
