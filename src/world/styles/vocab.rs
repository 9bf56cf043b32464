//! The vocabularies of the built-in styles. Every style fills the same sentence skeletons
//! (grammar.rs), so a style shows only in its words: hundreds of them per style, none of which
//! names a concept of the scene world (a test checks), so styled text claims nothing about a
//! picture unless it means to.
//!
//! Lists are space-separated; `_` joins a multi-word entry; time phrases are separated by `|`.

pub struct Vocabulary {
    pub style: &'static str,
    pub nouns: &'static str,
    pub adjectives: &'static str,
    /// Intransitive verbs, past tense.
    pub verbs: &'static str,
    /// Transitive verbs, past tense.
    pub transitive: &'static str,
    /// Nouns for places ("behind the ___").
    pub places: &'static str,
    pub times: &'static str,
    pub adverbs: &'static str,
}

pub const VOCABULARIES: &[Vocabulary] = &[
    Vocabulary {
        style: "noir",
        nouns: "detective dame gumshoe cigarette bourbon revolver precinct informant badge \
            trenchcoat fedora racket mobster bullet saxophone hangover ledger alibi confession \
            widow stakeout bartender payoff grudge heist switchblade matchbook whiskey jukebox \
            wiretap snitch cop coroner suspect getaway lighter typewriter telephone doorman \
            landlord bookie gambler stranger gunshot corpse paycheck client dossier ashtray racketeer henchman \
            mugshot shamus",
        adjectives: "smoky crooked bitter rotten lonely cheap wet tired hardboiled dirty greasy \
            broke shady seedy grim stale cynical jaded sleepless cold dim nervous desperate weary \
            battered slick sour wary busted gritty bloodshot hungover sullen flickering boozy \
            hollow restless rusty sweaty secretive guilty crumpled furtive stubborn brittle \
            dangerous crooked_little",
        verbs: "waited lied drank smoked flinched vanished sweated slouched lingered stumbled \
            muttered squinted shrugged paced brooded schemed cracked folded confessed sulked \
            sighed hustled loitered listened gambled bled staggered swore dozed talked",
        transitive: "tailed shadowed bribed framed questioned pocketed shot betrayed cornered \
            tipped threatened paid robbed trusted hid kissed busted squeezed pawned lit poured \
            grilled fingered buried owed ditched forgot followed burned blackmailed doubted",
        places: "alley gutter precinct bar basement backroom diner docks stairwell motel office \
            warehouse poolhall speakeasy garage rooftop boardwalk casino tenement hallway subway \
            elevator phonebooth nightclub pawnshop barbershop lobby hotel waterfront underpass",
        times: "after the last call|before the morning papers|long after closing time|when the \
            jukebox died|between two cigarettes|at the end of the shift|before the cops \
            arrived|after the payoff|when the bottle ran dry|before the lights came on|after the \
            third whiskey|when the phone rang|as the clock crawled|before the trial|after the \
            funeral|when the money ran out|during the stakeout|before the deal went sour|at the \
            wrong hour|after the shooting",
        adverbs: "quietly slowly alone again bitterly wearily coldly nervously cheaply dully \
            grimly silently patiently carelessly sourly sullenly lazily heavily darkly hoarsely",
    },
    Vocabulary {
        style: "gothic",
        nouns: "crypt raven specter phantom tomb coffin candle shroud gargoyle abbey chapel \
            vault mausoleum lantern wraith ghoul bat spirit skull cathedral castle dungeon \
            portrait mirror organ bell gate requiem curse legacy heir countess vampire sepulchre \
            ruin cloister labyrinth catacomb relic rosary oath manor graveyard cemetery \
            apparition banshee candelabra hearse sexton \
            bier epitaph reliquary sarcophagus necromancer monk nun abbess inquisitor heretic \
            gravedigger undertaker pallbearer dirge effigy revenant incubus widower orphan chalice \
            grimoire thorn vigil pyre ossuary_gate",
        adjectives: "ancient ghastly spectral cursed forlorn eerie dread mournful decaying \
            crumbling haunted sepulchral funereal solemn gloomy morbid macabre wretched sinister \
            lurid pallid cadaverous ghostly melancholy desolate ruinous unholy tormented wan \
            shadowed bleak lugubrious moldering forsaken sombre accursed baleful eldritch weeping \
            lifeless doomed dusty cobwebbed ghoulish wailing grave hallowed",
        verbs: "wept moaned wailed shuddered crept lingered decayed brooded prayed mourned \
            howled trembled withered faded crumbled sighed knelt perished slumbered stirred \
            groaned vanished rotted festered whispered tolled swooned quivered languished waited",
        transitive: "buried haunted cursed summoned entombed exhumed mourned beheld shrouded \
            devoured forsook betrayed desecrated beckoned embraced bewitched awakened tormented \
            consumed worshipped guarded shunned unearthed sealed condemned lamented wed kissed \
            dreaded followed",
        places: "crypt catacombs abbey chapel graveyard vault cloister dungeon mausoleum \
            cathedral belfry ruins manor marsh moor churchyard ossuary sanctuary gallery corridor \
            staircase attic tomb courtyard labyrinth battlements chamber cellar crossroads gallows",
        times: "at the witching hour|as the bell tolled|when the candles guttered|before the \
            cock crowed|after the last rites|at the hour of vespers|as the organ fell \
            silent|when the grave was opened|before the wedding|after the burial|when the curse \
            awoke|as the chapel emptied|before the dead were counted|when the portrait \
            wept|after the funeral mass|as the shadows lengthened|before the final prayer|when \
            the raven called|at the close of the requiem|as the tapers died",
        adverbs: "mournfully silently slowly forever eerily softly dolefully gravely solemnly \
            wearily restlessly dimly faintly hollowly piteously endlessly darkly sorrowfully \
            bleakly coldly",
    },
    Vocabulary {
        style: "surreal",
        nouns: "clock teacup giraffe staircase umbrella piano jellyfish elephant keyhole \
            lobster mirror doorknob feather balloon telescope violin typewriter ladder snail \
            accordion whale pocketwatch chessboard seashell cloud kite egg hourglass key spoon \
            compass labyrinth mannequin metronome envelope bicycle armchair octopus chandelier \
            lighthouse windmill gramophone trumpet zebra owl pineapple marble thimble \
            tortoise flamingo ampersand zeppelin teapot prism kaleidoscope nautilus periscope \
            harpsichord chrysalis dodo axolotl abacus marionette weathervane saxophone lantern",
        adjectives: "melting floating inverted liquid infinite transparent invisible elastic \
            dreaming whispering velvet backward sideways weightless humming luminous crystalline \
            fluid impossible wandering folded hollow spiraling paper glass rubber echoing \
            sleepwalking reversed boneless endless curious tangled unraveling breathing singing \
            forgotten stretched spotted feathered mechanical upside_down fractal dissolving \
            mirrored quiet borrowed",
        verbs: "melted floated dissolved hummed unraveled levitated evaporated blinked hatched \
            sprouted multiplied rippled yawned swam drifted dreamed shimmered flickered orbited \
            tumbled expanded shrank waltzed spun sang whispered reversed vanished echoed folded",
        transitive: "swallowed painted unfolded devoured juggled inhaled knitted reflected \
            rewound balanced unlocked wore planted erased ate carried tuned invented borrowed \
            fed opened polished counted chased measured stitched sipped mailed married hatched",
        places: "ceiling labyrinth teacup aquarium hourglass wardrobe desert attic orchard \
            museum library carousel bathtub piano greenhouse corridor mirror staircase keyhole \
            envelope circus seashell balloon canyon ballroom laboratory birdcage elevator drawer \
            suitcase",
        times: "when the clocks melted|before the ceiling opened|after the fish learned to \
            sing|as gravity took a holiday|when Tuesday fell upward|before the colors \
            woke|after the piano dissolved|while the stairs slept|when the mirrors blinked|as \
            the hours unraveled|before breakfast was invented|after the ocean folded|when the \
            shadows traded places|as the map forgot itself|while time hummed backward|when the \
            door grew teeth|before the echo returned|after the umbrella laughed|when the keys \
            began to swim|as the walls breathed",
        adverbs: "sideways backward softly upside_down endlessly quietly inward strangely \
            slowly weightlessly dreamily gently silently impossibly lazily invisibly politely \
            patiently nowhere elsewhere",
    },
    Vocabulary {
        style: "romantic",
        nouns: "heart kiss lover sweetheart beloved rose embrace letter locket ring promise \
            serenade darling sigh waltz ribbon poem dance bouquet valentine tenderness devotion \
            suitor bride groom veil melody caress whisper dream longing passion vow garden \
            balcony candlelight gaze smile blush perfume lace swan dove honeymoon keepsake \
            reunion courtship admirer violin \
            sonnet ballad corsage trousseau rendezvous tryst heartbeat lullaby starlight mandolin \
            cherub confidant",
        adjectives: "tender sweet gentle longing adoring radiant lovely warm wistful devoted \
            dreamy enchanted blissful passionate breathless yearning fond cherished precious \
            starry charming graceful heavenly blushing smitten faithful delicate soft glowing \
            luminous dear affectionate amorous romantic serene candlelit heartfelt lovesick \
            beloved intimate rapturous fragrant silken tearful hopeful",
        verbs: "sighed blushed danced swooned yearned waited smiled glowed trembled wept longed \
            dreamed lingered whispered laughed sang wandered knelt melted fluttered shimmered \
            rejoiced pined softened sparkled twirled promised listened hoped_again hoped",
        transitive: "kissed adored cherished embraced courted wooed serenaded held caressed \
            treasured missed married remembered followed admired worshipped enchanted charmed \
            captured kept answered wrote sealed sent gave carried awaited desired tempted honored",
        places: "garden balcony ballroom meadow orchard gazebo terrace fountain veranda bridge \
            riverbank chapel vineyard courtyard pavilion harbor promenade arbor glade grove lake \
            cafe parlor conservatory rosebush boulevard piazza seashore staircase window",
        times: "on their wedding eve|when the violins began|before the last waltz|after the \
            first kiss|as the music swelled|when their eyes met|before the letters \
            stopped|after the long goodbye|as the candles burned low|when spring \
            returned|before the carriage left|after the proposal|as the petals fell|when the \
            bells rang for them|before the dawn chorus|after the dance ended|when the roses \
            opened|as the heart remembered|during the summer fair|on the eve of parting",
        adverbs: "tenderly softly sweetly gently fondly warmly dearly forever longingly lovingly \
            breathlessly faithfully dreamily shyly gracefully slowly passionately wistfully \
            happily together",
    },
    Vocabulary {
        style: "humorous",
        nouns: "banana pickle noodle clown llama penguin sock toaster burrito hamster pancake \
            muffin duck goat walrus kazoo spatula sandwich donut waffle pajamas moustache \
            grandma uncle accountant plumber dentist potato cactus tuba unicycle hiccup meatball \
            chicken pelican sloth raccoon squirrel beaver poodle spreadsheet microwave lasagna \
            bagel trampoline yodeler hairdresser intern \
            hedgehog mayonnaise sitcom crouton flamingo",
        adjectives: "wobbly sneaky goofy clumsy soggy grumpy bouncy ridiculous silly squeaky \
            lopsided sticky fuzzy chubby cranky dizzy nosy confused awkward bald hairy lumpy \
            smelly jiggly rubbery slippery snoring overcooked undercooked greasy ticklish \
            bumbling cheeky mischievous flabbergasted baffled bewildered puffy scruffy wacky zany \
            nutty loopy tipsy hungry sweaty",
        verbs: "tripped sneezed wobbled giggled snorted hiccupped waddled tumbled burped danced \
            slipped fell snored yodeled squeaked sulked toppled bounced belched flailed panicked \
            exploded collapsed fainted dozed grumbled blinked shrieked cackled napped",
        transitive: "ate dropped sat_on tickled licked juggled sniffed swallowed bit hugged \
            stole chased borrowed misplaced tripped_over wore smashed microwaved buttered \
            insulted poked spilled knitted sold invoiced photobombed headbutted flattened lost \
            mistook",
        places: "supermarket laundromat kitchen cafeteria gym parking_lot buffet barbershop zoo \
            farm bakery petshop garage office classroom hospital airport bowling_alley elevator \
            mall playground pizzeria circus waterpark library karaoke diner bathroom basement \
            carpool",
        times: "during the office party|right after lunch|before the second breakfast|on taco \
            Tuesday|after the fourth coffee|during the tax audit|before the dentist \
            appointment|after the birthday cake|when the diet started|during the talent \
            show|right before the wedding photo|after the buffet closed|when the wifi \
            died|during the fire drill|as the yoga class began|before anyone noticed|after the \
            bingo game|when the pants ripped|during the group photo|as the microwave beeped",
        adverbs: "clumsily loudly proudly awkwardly sheepishly cheerfully suspiciously \
            accidentally hopelessly gleefully badly noisily sloppily wildly boldly twice again \
            somehow anyway obviously",
    },
    Vocabulary {
        style: "factual",
        nouns: "pedestrian shopkeeper student teacher commuter neighbor bicycle motorcycle \
            newspaper backpack suitcase notebook telephone computer building apartment \
            restaurant customer passenger visitor mechanic policeman fisherman gardener \
            carpenter musician photographer traveler tourist worker manager engineer doctor \
            nurse cashier driver grocer window doorway sidewalk crosswalk streetcar platform \
            container basket bottle blanket cushion",
        adjectives: "ordinary crowded wooden concrete painted comfortable rectangular rounded \
            plastic cardboard leather cotton striped spacious narrow residential municipal \
            public private temporary portable electric regular standard practical modern \
            traditional suburban downtown neighboring average typical unremarkable functional \
            sturdy polished folded stacked parked rented borrowed shared empty quiet young \
            elderly retired familiar careful patient",
        verbs: "walked waited worked talked listened returned traveled stopped rested shopped \
            commuted exercised practiced studied answered arrived departed paused nodded \
            stretched relaxed volunteered competed gathered lined_up cooked cleaned chatted \
            reported sat_down",
        transitive: "carried repaired purchased delivered inspected measured organized arranged \
            photographed recorded collected prepared replaced borrowed visited checked cleaned \
            painted assembled unloaded installed ordered returned signed printed packed labeled \
            parked adjusted examined",
        places: "station supermarket hospital office_building classroom apartment warehouse \
            intersection sidewalk platform library restaurant bakery pharmacy post_office \
            stadium parking_garage hardware_store laundromat airport_terminal bus_stop museum \
            playground courthouse city_hall train_station grocery_store bank factory university",
        times: "in the early morning|after the workday ended|on a weekday morning|before the \
            lunch break|after the school day|during the summer holidays|during the football \
            game|on an ordinary Monday|after a family dinner|before the weekly meeting|in the \
            spring season|during the coffee break|after the last lecture|over the long \
            weekend|before the store opened|in the winter months|after the local match|during \
            the business trip|at the start of the week|later that same week",
        adverbs: "slowly quickly together carefully outside indoors briefly calmly quietly \
            regularly patiently politely recently usually normally promptly eventually \
            separately gradually steadily",
    },
];
